// SPDX-License-Identifier: GPL-2.0
/*
 * numa_harness_private: make a device-DAX range a private memory node through the
 * Private Memory Nodes series' own API (RFC v4: add_private_memory_driver_managed(),
 * node_private_set_ops(), cram_register_private_node()).
 *
 * Part of numa-harness. Built out of tree against a kernel carrying the series
 * (make -C BUILD M=DIR modules). It is a dax bus driver, as dax/kmem is: the guest's
 * provisioning turns a memmap= legacy pmem range into a devdax namespace, unbinds the
 * dax device from device_dax and writes its name to this driver's new_id. Probe then,
 * for each memory-block-aligned range of the device:
 *
 *   request_mem_region(range), flags IORESOURCE_SYSTEM_RAM (as kmem: add_memory may nest in it)
 *   add_private_memory_driver_managed(target_node, range, "System RAM (...)",
 *                                     MHP_NONE, MMOP_ONLINE_MOVABLE, &np)
 *
 * and gives the node its services:
 *
 *   cram=1:  cram_register_private_node(nid, ...)   (CRAM's own ops and flags)
 *   else:    node_private_set_ops(nid, &ops) with ops.flags = the ops= parameter
 *            (NP_OPS_* bits; MIGRATION brings migrate_to/folio_migrate callbacks
 *            that place pages on the node with __GFP_THISNODE | __GFP_PRIVATE, as
 *            the series' cxl_mempolicy sample does)
 *
 * The node's memory tier is set the way kmem sets one (an abstract distance from the
 * node's HMAT performance), so a CRAM node can be a demotion target.
 *
 * Every step's outcome is printed as "numa_harness_private: ..." in the kernel log.
 */
#include <linux/module.h>
#include <linux/ioport.h>
#include <linux/device.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/memory.h>
#include <linux/memory_hotplug.h>
#include <linux/memory-tiers.h>
#include <linux/migrate.h>
#include <linux/node_private.h>
#include <linux/cram.h>
#include "dax-private.h"
#include "bus.h"

#define NAME "numa_harness_private"

static unsigned long ops;
module_param(ops, ulong, 0644);
MODULE_PARM_DESC(ops, "NP_OPS_* flags the node opts into (bit 0 MIGRATION, 1 MEMPOLICY, 2 DEMOTION, "
		 "3 PROTECT_WRITE, 4 RECLAIM, 5 NUMA_BALANCING, 6 COMPACTION, 7 LONGTERM_PIN)");
static bool cram;
module_param(cram, bool, 0644);
MODULE_PARM_DESC(cram, "register the node with CRAM (cram_register_private_node) instead of ops=");

struct nhp_data {
	int nid;
	int nr;
	bool cram;
	bool ops_set;
	struct node_private np;
	struct node_private_ops ops;
	struct memory_dev_type *mtype;
	struct resource **res;
	struct range ranges[];
};

static LIST_HEAD(nhp_memory_types);
static DEFINE_MUTEX(nhp_memory_type_lock);

static struct folio *nhp_alloc(struct folio *src, unsigned long private)
{
	int nid = (int)private;

	if (folio_test_hugetlb(src))
		return NULL;
	return __folio_alloc_node(GFP_HIGHUSER_MOVABLE | __GFP_THISNODE | __GFP_PRIVATE,
				  folio_order(src), nid);
}

static int nhp_migrate_to(struct list_head *folios, int nid, enum migrate_mode mode,
			  enum migrate_reason reason, unsigned int *nr_succeeded)
{
	return migrate_pages(folios, nhp_alloc, NULL, (unsigned long)nid, mode, reason, nr_succeeded);
}

static void nhp_folio_migrate(struct folio *src, struct folio *dst)
{
}

static bool nhp_range(struct dev_dax *dev_dax, int i, struct range *r)
{
	struct range *range = &dev_dax->ranges[i].range;

	r->start = ALIGN(range->start, memory_block_size_bytes());
	r->end = ALIGN_DOWN(range->end + 1, memory_block_size_bytes()) - 1;
	return r->start < r->end;
}

/* Unregister the node's services, then offline and remove every range; false if memory stays. */
static bool nhp_teardown(struct nhp_data *data)
{
	int i, rc;

	if (data->cram)
		cram_unregister_private_node(data->nid);
	else if (data->ops_set)
		node_private_clear_ops(data->nid, &data->ops);
	data->cram = data->ops_set = false;
	for (i = 0; i < data->nr; i++) {
		struct range *r = &data->ranges[i];

		rc = offline_and_remove_private_memory(data->nid, r->start, range_len(r));
		pr_info(NAME ": offline_and_remove_private_memory(node %d, %#llx) = %d\n", data->nid, r->start, rc);
		if (rc && rc != -EBUSY)
			return false;	/* the memory stays: keep its region, as kmem does */
		remove_resource(data->res[i]);
		kfree(data->res[i]);
	}
	clear_node_memory_type(data->nid, data->mtype);
	return true;
}

static int nhp_probe(struct dev_dax *dev_dax)
{
	struct device *dev = &dev_dax->dev;
	int nid = dev_dax->target_node;
	int adist = MEMTIER_ADISTANCE_DRAM * 5;
	struct nhp_data *data;
	int i, rc, added = 0;

	if (nid < 0) {
		dev_warn(dev, NAME ": no target node\n");
		return -EINVAL;
	}
	data = kzalloc(struct_size(data, ranges, dev_dax->nr_range), GFP_KERNEL);
	if (!data)
		return -ENOMEM;
	data->res = kcalloc(dev_dax->nr_range, sizeof(*data->res), GFP_KERNEL);
	if (!data->res) {
		kfree(data);
		return -ENOMEM;
	}
	data->nid = nid;
	data->cram = cram;
	data->np.owner = data;

	mt_calc_adistance(nid, &adist);
	mutex_lock(&nhp_memory_type_lock);
	data->mtype = mt_find_alloc_memory_type(adist, &nhp_memory_types);
	mutex_unlock(&nhp_memory_type_lock);
	if (IS_ERR(data->mtype)) {
		rc = PTR_ERR(data->mtype);
		goto err_free;
	}
	init_node_memory_type(nid, data->mtype);

	for (i = 0; i < dev_dax->nr_range; i++) {
		struct resource *res;
		struct range r;

		if (!nhp_range(dev_dax, i, &r))
			continue;
		res = request_mem_region(r.start, range_len(&r), dev_name(dev));
		if (!res) {
			dev_warn(dev, NAME ": range %#llx-%#llx is busy\n", r.start, r.end);
			continue;
		}
		/* not BUSY, so the hotplug's "System RAM (...)" resource can nest in it (as kmem) */
		res->flags = IORESOURCE_SYSTEM_RAM;
		rc = add_private_memory_driver_managed(nid, r.start, range_len(&r),
						       "System RAM (" NAME ")", MHP_NONE,
						       MMOP_ONLINE_MOVABLE, &data->np);
		pr_info(NAME ": add_private_memory_driver_managed(node %d, %#llx, %#llx) = %d\n",
			nid, r.start, range_len(&r), rc);
		if (rc) {
			remove_resource(res);
			kfree(res);
			continue;
		}
		data->res[data->nr] = res;
		data->ranges[data->nr++] = r;
		added++;
	}
	if (!added) {
		rc = -ENXIO;
		goto err_type;
	}

	if (data->cram) {
		rc = cram_register_private_node(nid, data, NULL, NULL);
		pr_info(NAME ": cram_register_private_node(node %d) = %d\n", nid, rc);
	} else {
		data->ops.flags = ops;
		if (ops & NP_OPS_MIGRATION) {
			data->ops.migrate_to = nhp_migrate_to;
			data->ops.folio_migrate = nhp_folio_migrate;
		}
		rc = node_private_set_ops(nid, &data->ops);
		pr_info(NAME ": node_private_set_ops(node %d, flags %#lx) = %d\n", nid, ops, rc);
		data->ops_set = !rc;
	}
	if (rc) {	/* a rejected registration fails the bind: take the memory back out */
		data->cram = false;
		if (nhp_teardown(data)) {
			kfree(data->res);
			kfree(data);
		}
		return rc;
	}
	dev_set_drvdata(dev, data);
	pr_info(NAME ": node %d private: %d range(s), has_private_memory=%d has_memory=%d\n",
		nid, data->nr, node_state(nid, N_MEMORY_PRIVATE), node_state(nid, N_MEMORY));
	return 0;

err_type:
	clear_node_memory_type(nid, data->mtype);
err_free:
	kfree(data->res);
	kfree(data);
	return rc;
}

static void nhp_remove(struct dev_dax *dev_dax)
{
	struct nhp_data *data = dev_get_drvdata(&dev_dax->dev);

	if (data && nhp_teardown(data)) {
		kfree(data->res);
		kfree(data);
	}
}

static struct dax_device_driver nhp_driver = {
	.probe = nhp_probe,
	.remove = nhp_remove,
	.type = DAXDRV_KMEM_TYPE,
};

static int __init nhp_init(void)
{
	return dax_driver_register(&nhp_driver);
}

static void __exit nhp_exit(void)
{
	dax_driver_unregister(&nhp_driver);
	mt_put_memory_types(&nhp_memory_types);
}

MODULE_DESCRIPTION("numa-harness: a device-DAX range as a private memory node (Private Memory Nodes RFC v4 API)");
MODULE_LICENSE("GPL");
module_init(nhp_init);
module_exit(nhp_exit);
