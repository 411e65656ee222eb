// SPDX-License-Identifier: GPL-2.0
/*
 * A KUnit suite for numa-harness's own tests: what a developer's test module
 * looks like. Its verdicts depend on the guest's NUMA topology: on numa-basic
 * (two nodes with CPUs) one case passes, one fails on purpose, one skips with
 * a reason, and a parameterised case runs once per possible node.
 */
#include <kunit/test.h>
#include <linux/nodemask.h>
#include <linux/topology.h>

static void nh_two_nodes_online(struct kunit *test)
{
	KUNIT_EXPECT_GE(test, num_online_nodes(), 2);
}

static void nh_sixty_four_nodes(struct kunit *test)
{
	/* fails on purpose: the harness must report it with KUnit's diagnostics */
	KUNIT_EXPECT_EQ(test, num_online_nodes(), 64);
}

static void nh_memory_only_node(struct kunit *test)
{
	int nid;

	for_each_node_state(nid, N_MEMORY)
		if (!node_state(nid, N_CPU))
			return;
	kunit_skip(test, "no memory-only node in this topology");
}

static const int nh_nodes[] = { 0, 1 };

static void nh_node_desc(const int *nid, char *desc)
{
	snprintf(desc, KUNIT_PARAM_DESC_SIZE, "node%d", *nid);
}

KUNIT_ARRAY_PARAM(nh_node, nh_nodes, nh_node_desc);

static void nh_node_has_cpus(struct kunit *test)
{
	const int *nid = test->param_value;

	KUNIT_EXPECT_TRUE(test, node_state(*nid, N_CPU));
}

static struct kunit_case nh_nodes_cases[] = {
	KUNIT_CASE(nh_two_nodes_online),
	KUNIT_CASE(nh_sixty_four_nodes),
	KUNIT_CASE(nh_memory_only_node),
	KUNIT_CASE_PARAM(nh_node_has_cpus, nh_node_gen_params),
	{}
};

static struct kunit_suite nh_nodes_suite = {
	.name = "nh_nodes",
	.test_cases = nh_nodes_cases,
};

kunit_test_suite(nh_nodes_suite);

MODULE_DESCRIPTION("numa-harness: a KUnit suite on the guest's NUMA nodes");
MODULE_LICENSE("GPL");
