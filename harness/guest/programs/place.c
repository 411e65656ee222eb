/* place: allocate memory under a memory policy, touch it, report where every page is.
 *
 * Order: set_mempolicy (--via set_mempolicy) -> mmap -> madvise THP ->
 * [--prefault: touch] -> mbind (--via mbind, with --move/--strict) -> touch ->
 * [--mlock] -> [--mergeable: same bytes in every page, MADV_MERGEABLE] ->
 * move_pages query -> [--madvise cold|pageout, then a second query] ->
 * get_mempolicy read-back -> JSON -> hold (with --hot: touching
 * every page, pass after pass, until the hold ends: hot memory for promotion tests).
 * A refused call ends the run there: the JSON says which call and errno, and
 * still reports where the pages already touched are. See README.md.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { OPT_MLOCK = OPT_FIRST_FREE, OPT_PREFAULT, OPT_MERGEABLE, OPT_HOT, OPT_MADVISE };

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

/* "cold" -> MADV_COLD, "pageout" -> MADV_PAGEOUT, else -1. */
static int advice_of(const char *name)
{
	if (strcmp(name, "cold") == 0)
		return MADV_COLD;
	if (strcmp(name, "pageout") == 0)
		return MADV_PAGEOUT;
	return -1;
}

/* Where every page is, as JSON member NAME (a failed query says so). */
static void j_placement(json_t *j, const char *name, region_t *r)
{
	void **pages = region_pages(r, r->npages);
	hist_t h;

	if (query_pages(0, pages, r->npages, &h) < 0) {
		j_obj(j, name);
		j_fail(j, "move_pages", errno);
		j_obj_end(j);
	} else {
		j_hist(j, name, &h);
	}
	free(pages);
}

/* Every page holds the same bytes, and KSM may merge them. */
static int make_mergeable(region_t *r)
{
	size_t i;

	for (i = 0; i < r->npages; i++)
		memset(r->addr + i * r->page_size, 0x5a, r->page_size);
	return madvise(r->addr, r->size, MADV_MERGEABLE);
}

/* Hold as asked, touching every page pass after pass meanwhile; the number of passes. */
static long hold_hot(region_t *r, const hold_opts_t *h)
{
	double end = h->seconds < 0 ? -1 : now() + h->seconds;
	long passes = 0;

	for (;;) {
		region_touch(r);
		passes++;
		if (hold_poll() || (end >= 0 && now() >= end))
			return passes;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		REGION_LONG_OPTIONS, POLICY_LONG_OPTIONS, HOLD_LONG_OPTIONS,
		{"mlock", 0, 0, OPT_MLOCK}, {"prefault", 0, 0, OPT_PREFAULT},
		{"mergeable", 0, 0, OPT_MERGEABLE}, {"hot", 0, 0, OPT_HOT}, {"madvise", 1, 0, OPT_MADVISE},
		{0, 0, 0, 0},
	};
	region_opts_t ro;
	policy_t pol;
	hold_opts_t hold = {0, 0};
	int do_mlock = 0, prefault = 0, mergeable = 0, hot = 0, advice = -1, opt, failed = 0;
	const char *advice_name = NULL;
	const char *call = NULL;
	region_t r = {0};
	double t0, t_map = 0, t_policy = 0, t_touch = 0, t_mlock = 0, t_query = 0;
	json_t j;

	nh_usage = "place " REGION_USAGE " " POLICY_USAGE " [--prefault] [--mlock] [--mergeable] "
		   "[--madvise cold|pageout] " HOLD_USAGE " [--hot]";
	region_opts_init(&ro);
	policy_init(&pol);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (region_opt(&ro, opt, optarg) || policy_opt(&pol, opt, optarg) || hold_opt(&hold, opt, optarg))
			continue;
		if (opt == OPT_MLOCK)
			do_mlock = 1;
		else if (opt == OPT_PREFAULT)
			prefault = 1;
		else if (opt == OPT_MERGEABLE)
			mergeable = 1;
		else if (opt == OPT_HOT)
			hot = 1;
		else if (opt == OPT_MADVISE) {
			advice_name = optarg;
			advice = advice_of(optarg);
			if (advice < 0)
				usage_error("--madvise takes cold or pageout, not '%s'", optarg);
		} else
			usage_error("unknown option");
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	region_opts_check(&ro);
	policy_check(&pol);
	if (hot && !hold.enabled)
		usage_error("--hot keeps the pages hot while holding: give --hold S or --hold-until-signal");

	j_init(&j);
	j_obj(&j, NULL);
	j_str(&j, "program", "place");
	j_int(&j, "pid", getpid());

	t0 = now();
	if (policy_apply_task(&pol, &call) < 0)
		failed = errno;
	t_policy += now() - t0;
	if (!failed) {
		t0 = now();
		if (region_map(&r, (size_t)ro.size_mib << 20, ro.kind, ro.thp, &call) < 0)
			failed = errno;
		t_map = now() - t0;
	}
	if (!failed && prefault) {
		t0 = now();
		region_touch(&r);
		t_touch += now() - t0;
	}
	if (!failed) {
		t0 = now();
		if (policy_apply_range(&pol, r.addr, r.size, &call) < 0)
			failed = errno;
		t_policy += now() - t0;
	}
	if (!failed) {
		t0 = now();
		region_touch(&r);
		t_touch += now() - t0;
	}
	if (!failed && do_mlock) {
		t0 = now();
		call = "mlock";
		if (mlock(r.addr, r.size) < 0)
			failed = errno;
		t_mlock = now() - t0;
	}
	if (!failed && mergeable) {
		call = "madvise";
		if (make_mergeable(&r) < 0)
			failed = errno;
	}

	if (failed)
		j_fail(&j, call, failed);
	else
		j_bool(&j, "ok", 1);
	j_region(&j, &ro, &r);
	if (r.addr) {
		char a[32];

		snprintf(a, sizeof(a), "%lx", (unsigned long)r.addr); /* as numa_maps prints it */
		j_str(&j, "addr", a);
	} else {
		j_null(&j, "addr");
	}
	j_bool(&j, "mlock", do_mlock);
	j_bool(&j, "prefault", prefault);
	j_bool(&j, "mergeable", mergeable);
	j_bool(&j, "hot", hot);
	j_policy(&j, "policy", &pol);
	j_policy_readback(&j, "readback", pol.via_mbind && r.addr ? r.addr : NULL);
	if (r.addr) {
		t0 = now();
		j_placement(&j, "placement", &r);
		t_query = now() - t0;
	} else {
		j_null(&j, "placement");
	}
	/* After the first query, so the report has where the pages were and where they are now
	 * (MADV_PAGEOUT: swapped out pages are no longer on any node). */
	if (advice_name && !failed && r.addr) {
		j_obj(&j, "madvise");
		j_str(&j, "advice", advice_name);
		if (madvise(r.addr, r.size, advice) < 0) {
			j_fail(&j, "madvise", errno);
		} else {
			j_bool(&j, "ok", 1);
			j_placement(&j, "placement", &r);
		}
		j_obj_end(&j);
	} else {
		j_null(&j, "madvise");
	}
	j_obj(&j, "elapsed");
	j_num(&j, "map_s", t_map);
	j_num(&j, "policy_s", t_policy);
	j_num(&j, "touch_s", t_touch);
	j_num(&j, "mlock_s", t_mlock);
	j_num(&j, "query_s", t_query);
	j_obj_end(&j);
	j_hold(&j, failed ? &(hold_opts_t){0, 0} : &hold);
	j_obj_end(&j);
	j_print(&j, stdout);
	j_free(&j);
	if (!failed && hot)
		fprintf(stderr, "hot hold ended after %ld passes\n", hold_hot(&r, &hold));
	else if (!failed)
		hold_run(&hold);
	return 0;
}
