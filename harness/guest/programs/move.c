/* move: move_pages(2) a filled buffer to a node; per-page statuses, data checked.
 *
 * mmap -> [--from-node: mbind MPOL_BIND there] -> fill with a pattern ->
 * checksum -> query -> move_pages(self, K pages, to node, MPOL_MF_MOVE[_ALL]) ->
 * query -> checksum again. See README.md.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <unistd.h>

enum { OPT_FROM = OPT_FIRST_FREE, OPT_TO, OPT_PAGES, OPT_ALL };

static void j_checksum(json_t *j, const char *key, uint64_t sum)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)sum);
	j_str(j, key, buf);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		REGION_LONG_OPTIONS,
		{"from-node", 1, 0, OPT_FROM}, {"to", 1, 0, OPT_TO}, {"pages", 1, 0, OPT_PAGES},
		{"all", 0, 0, OPT_ALL}, {0, 0, 0, 0},
	};
	region_opts_t ro;
	int from = -1, to = -1, opt, failed = 0, flags = NH_MPOL_MF_MOVE;
	long long want = -1;
	long moved_ret = -1; /* -1: not called or refused */
	const char *call = NULL;
	region_t r = {0};
	uint64_t sum_before = 0, sum_after = 0;
	double t0, t_fill = 0, t_move = 0, t_query = 0;
	hist_t before, status_h, after;
	void **pages = NULL;
	json_t j;

	nh_usage = "move " REGION_USAGE " --to NODE [--from-node NODE] [--pages K] [--all]";
	region_opts_init(&ro);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (region_opt(&ro, opt, optarg))
			continue;
		switch (opt) {
		case OPT_FROM:
			from = (int)parse_int("--from-node", optarg, 0, NH_MAX_NODES - 1);
			break;
		case OPT_TO:
			to = (int)parse_int("--to", optarg, 0, NH_MAX_NODES - 1);
			break;
		case OPT_PAGES:
			want = parse_int("--pages", optarg, 0, 1LL << 40);
			break;
		case OPT_ALL:
			flags = NH_MPOL_MF_MOVE_ALL;
			break;
		default:
			usage_error("unknown option");
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	region_opts_check(&ro);
	if (to < 0)
		usage_error("--to NODE is required");

	hist_clear(&before);
	hist_clear(&status_h);
	hist_clear(&after);
	if (region_map(&r, (size_t)ro.size_mib << 20, ro.kind, ro.thp, &call) < 0)
		failed = errno;
	if (want < 0 || (size_t)want > r.npages)
		want = (long long)r.npages;
	if (!failed && from >= 0) {
		nodemask_t m = {{0}};

		mask_set(&m, from);
		call = "mbind";
		if (sys_mbind(r.addr, r.size, NH_MPOL_BIND, &m, 0) < 0)
			failed = errno;
	}
	if (!failed) {
		t0 = now();
		region_fill(&r, 42);
		t_fill = now() - t0;
		sum_before = region_checksum(&r);
		pages = region_pages(&r, r.npages);
		call = "move_pages";
		t0 = now();
		if (query_pages(0, pages, r.npages, &before) < 0)
			failed = errno;
		t_query += now() - t0;
	}
	if (!failed) {
		int *nodes = malloc((want ? want : 1) * sizeof(int));
		int *status = malloc((want ? want : 1) * sizeof(int));

		if (!nodes || !status)
			fatal("out of memory for %lld page statuses", want);
		for (long long i = 0; i < want; i++) {
			nodes[i] = to;
			status[i] = -EINPROGRESS; /* untouched by the kernel if it fails early */
		}
		t0 = now();
		moved_ret = want ? sys_move_pages(0, (unsigned long)want, pages, nodes, status, flags) : 0;
		t_move = now() - t0;
		if (moved_ret < 0)
			failed = errno;
		else
			for (long long i = 0; i < want; i++)
				hist_add(&status_h, status[i]);
		free(nodes);
		free(status);
	}
	if (pages) {
		t0 = now();
		if (query_pages(0, pages, r.npages, &after) < 0 && !failed) {
			failed = errno;
			call = "move_pages";
		}
		t_query += now() - t0;
		sum_after = region_checksum(&r);
	}

	j_init(&j);
	j_obj(&j, NULL);
	j_str(&j, "program", "move");
	j_int(&j, "pid", getpid());
	if (failed)
		j_fail(&j, call, failed);
	else
		j_bool(&j, "ok", 1);
	j_region(&j, &ro, &r);
	if (from >= 0)
		j_int(&j, "from_node", from);
	else
		j_null(&j, "from_node");
	j_int(&j, "to_node", to);
	j_str(&j, "flag", flags == NH_MPOL_MF_MOVE_ALL ? "move-all" : "move");
	j_int(&j, "pages_requested", want);
	j_hist(&j, "before", &before);
	j_hist(&j, "status", &status_h);
	if (moved_ret >= 0)
		j_int(&j, "not_migrated", moved_ret);
	else
		j_null(&j, "not_migrated");
	j_hist(&j, "after", &after);
	j_checksum(&j, "checksum_before", sum_before);
	j_checksum(&j, "checksum_after", sum_after);
	j_bool(&j, "checksum_match", pages && sum_before == sum_after);
	j_obj(&j, "elapsed");
	j_num(&j, "fill_s", t_fill);
	j_num(&j, "move_s", t_move);
	j_num(&j, "query_s", t_query);
	j_obj_end(&j);
	j_obj_end(&j);
	j_print(&j, stdout);
	j_free(&j);
	free(pages);
	region_unmap(&r);
	return 0;
}
