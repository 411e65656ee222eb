/* pressure: fill memory in steps towards a target, reporting every step.
 *
 * For reclaim, demotion and fallback tests. Each step maps --step MiB of
 * anonymous memory (under the policy, if one is given), touches it and
 * records the allocated total, every node's MemFree and the machine's
 * MemAvailable (and the cgroup's memory.current), as one JSON line on stderr
 * and in the final object's "steps". It stops when the --until condition
 * holds, or earlier ("cut_short") when the next step could exhaust memory (a
 * guard, so the program is not OOM-killed), or when a call is refused.
 * See README.md.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { OPT_TARGET = OPT_FIRST_FREE, OPT_STEP, OPT_UNTIL, OPT_RESERVE, OPT_NO_GUARD };
enum { T_NODE, T_MACHINE, T_CGROUP };
enum { U_FREE_BELOW, U_TOTAL };

struct target {
	int kind;
	int node;
	const char *cgroup;
};

static long long read_ll(const char *dir, const char *file)
{
	char path[4096], buf[64];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f))
		v = strncmp(buf, "max", 3) == 0 ? -2 : atoll(buf);
	fclose(f);
	return v; /* -1 unreadable, -2 "max" */
}

/* The target's free memory in MiB, as the --until free-below condition reads it. */
static double target_free_mib(const struct target *t)
{
	if (t->kind == T_NODE)
		return node_meminfo_kib(t->node, "MemFree") / 1024.0;
	if (t->kind == T_CGROUP) {
		long long max = read_ll(t->cgroup, "memory.max"), cur = read_ll(t->cgroup, "memory.current");

		if (max >= 0 && cur >= 0)
			return (max - cur) / 1048576.0;
	}
	return meminfo_kib("MemFree") / 1024.0;
}

static int join_cgroup(const char *dir)
{
	char path[4096], pid[32];
	int fd, n, e;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (write(fd, pid, (size_t)n) != n) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return close(fd);
}

static void parse_target(const char *s, struct target *t)
{
	memset(t, 0, sizeof(*t));
	if (strcmp(s, "machine") == 0) {
		t->kind = T_MACHINE;
	} else if (strncmp(s, "node:", 5) == 0) {
		t->kind = T_NODE;
		t->node = (int)parse_int("--target node:", s + 5, 0, NH_MAX_NODES - 1);
	} else if (strncmp(s, "cgroup:", 7) == 0 && s[7]) {
		t->kind = T_CGROUP;
		t->cgroup = s + 7;
	} else {
		usage_error("--target wants node:N, machine or cgroup:PATH, not '%s'", s);
	}
}

static void parse_until(const char *s, int *kind, long long *mib)
{
	if (strncmp(s, "free-below:", 11) == 0) {
		*kind = U_FREE_BELOW;
		*mib = parse_int("--until free-below:", s + 11, 0, 1LL << 30);
	} else if (strncmp(s, "total:", 6) == 0) {
		*kind = U_TOTAL;
		*mib = parse_int("--until total:", s + 6, 0, 1LL << 30);
	} else {
		usage_error("--until wants free-below:MiB or total:MiB, not '%s'", s);
	}
}

/* One step's record, written into j (the "steps" array, or a stderr line). */
static void j_step(json_t *j, const struct target *t, int step, long long mib, double elapsed)
{
	j_obj(j, NULL);
	j_int(j, "step", step);
	j_int(j, "allocated_mib", mib);
	j_num(j, "elapsed_s", elapsed);
	j_num(j, "target_free_mib", target_free_mib(t));
	j_node_free(j, "node_free_mib");
	j_num(j, "mem_available_mib", meminfo_kib("MemAvailable") / 1024.0);
	if (t->kind == T_CGROUP) {
		long long cur = read_ll(t->cgroup, "memory.current");

		if (cur >= 0)
			j_num(j, "cgroup_current_mib", cur / 1048576.0);
		else
			j_null(j, "cgroup_current_mib");
	}
	j_obj_end(j);
}

static void record(json_t *steps, const struct target *t, int step, long long mib, double elapsed)
{
	json_t line;

	j_step(steps, t, step, mib, elapsed);
	j_init(&line);
	j_step(&line, t, step, mib, elapsed);
	j_print(&line, stderr);
	j_free(&line);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		POLICY_LONG_OPTIONS, HOLD_LONG_OPTIONS, {"thp", 1, 0, OPT_THP},
		{"target", 1, 0, OPT_TARGET}, {"step", 1, 0, OPT_STEP}, {"until", 1, 0, OPT_UNTIL},
		{"reserve", 1, 0, OPT_RESERVE}, {"no-guard", 0, 0, OPT_NO_GUARD}, {0, 0, 0, 0},
	};
	region_opts_t ro;
	policy_t pol;
	hold_opts_t hold = {0, 0};
	struct target t;
	int have_target = 0, until = -1, guard = 1, opt, failed = 0, nsteps = 0, reached = 0, cut = 0;
	long long until_mib = 0, step_mib = 16, reserve_mib = 64, allocated = 0;
	const char *call = NULL;
	char reason[256] = "";
	region_t *regions = NULL;
	size_t nregions = 0, total_pages = 0;
	double start;
	json_t j, steps;

	nh_usage = "pressure --target node:N|machine|cgroup:PATH --until free-below:MiB|total:MiB [--step MiB] "
		   "[--reserve MiB] [--no-guard] [--thp off|on|default] " POLICY_USAGE " " HOLD_USAGE;
	region_opts_init(&ro);
	policy_init(&pol);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (region_opt(&ro, opt, optarg) || policy_opt(&pol, opt, optarg) || hold_opt(&hold, opt, optarg))
			continue;
		switch (opt) {
		case OPT_TARGET:
			parse_target(optarg, &t);
			have_target = 1;
			break;
		case OPT_STEP:
			step_mib = parse_int("--step", optarg, 1, 1 << 20);
			break;
		case OPT_UNTIL:
			parse_until(optarg, &until, &until_mib);
			break;
		case OPT_RESERVE:
			reserve_mib = parse_int("--reserve", optarg, 0, 1 << 30);
			break;
		case OPT_NO_GUARD:
			guard = 0;
			break;
		default:
			usage_error("unknown option");
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!have_target || until < 0)
		usage_error("--target and --until are required");
	policy_check(&pol);

	j_init(&steps);
	j_arr(&steps, NULL);
	start = now();
	if (t.kind == T_CGROUP) {
		call = "cgroup.procs";
		if (join_cgroup(t.cgroup) < 0)
			failed = errno;
	}
	if (!failed && policy_apply_task(&pol, &call) < 0)
		failed = errno;
	if (!failed)
		record(&steps, &t, 0, 0, now() - start); /* the baseline */
	while (!failed) {
		long long chunk = step_mib;
		double avail = meminfo_kib("MemAvailable") / 1024.0;
		region_t r;

		if (until == U_TOTAL && allocated >= until_mib) {
			reached = 1;
			snprintf(reason, sizeof(reason), "allocated %lld MiB", allocated);
			break;
		}
		if (until == U_FREE_BELOW && target_free_mib(&t) < until_mib) {
			reached = 1;
			snprintf(reason, sizeof(reason), "target free %.1f MiB below %lld MiB", target_free_mib(&t),
				 until_mib);
			break;
		}
		if (until == U_TOTAL && until_mib - allocated < chunk)
			chunk = until_mib - allocated;
		if (guard && avail - chunk < reserve_mib) {
			cut = 1;
			snprintf(reason, sizeof(reason), "guard: MemAvailable %.1f MiB minus the next %lld MiB is below "
				 "the %lld MiB reserve", avail, chunk, reserve_mib);
			break;
		}
		if (guard && t.kind == T_CGROUP) {
			long long max = read_ll(t.cgroup, "memory.max"), cur = read_ll(t.cgroup, "memory.current");

			if (max >= 0 && cur >= 0 && (max - cur) / 1048576.0 - chunk < reserve_mib) {
				cut = 1;
				snprintf(reason, sizeof(reason), "guard: cgroup memory.max %lld MiB minus current %.1f MiB "
					 "minus the next %lld MiB is below the %lld MiB reserve", max >> 20,
					 cur / 1048576.0, chunk, reserve_mib);
				break;
			}
		}
		if (region_map(&r, (size_t)chunk << 20, KIND_ANON, ro.thp, &call) < 0 ||
		    policy_apply_range(&pol, r.addr, r.size, &call) < 0) {
			failed = errno;
			region_unmap(&r);
			break;
		}
		region_touch(&r);
		regions = realloc(regions, (nregions + 1) * sizeof(*regions));
		if (!regions)
			fatal("out of memory for the step list");
		regions[nregions++] = r;
		total_pages += r.npages;
		allocated += chunk;
		record(&steps, &t, ++nsteps, allocated, now() - start);
	}
	j_arr_end(&steps);

	j_init(&j);
	j_obj(&j, NULL);
	j_str(&j, "program", "pressure");
	j_int(&j, "pid", getpid());
	if (failed)
		j_fail(&j, call, failed);
	else
		j_bool(&j, "ok", 1);
	j_obj(&j, "target");
	j_str(&j, "kind", t.kind == T_NODE ? "node" : t.kind == T_MACHINE ? "machine" : "cgroup");
	if (t.kind == T_NODE)
		j_int(&j, "node", t.node);
	if (t.kind == T_CGROUP)
		j_str(&j, "cgroup", t.cgroup);
	j_obj_end(&j);
	j_obj(&j, "until");
	j_str(&j, "kind", until == U_TOTAL ? "total" : "free-below");
	j_int(&j, "mib", until_mib);
	j_obj_end(&j);
	j_int(&j, "step_mib", step_mib);
	j_str(&j, "thp", thp_name(ro.thp));
	j_bool(&j, "guard", guard);
	j_int(&j, "reserve_mib", reserve_mib);
	j_policy(&j, "policy", &pol);
	j_bool(&j, "reached", reached);
	j_bool(&j, "cut_short", cut);
	j_str(&j, "reason", failed ? "a call was refused" : reason);
	j_int(&j, "allocated_mib", allocated);
	j_num(&j, "fill_s", now() - start);
	j_num(&j, "target_free_mib", target_free_mib(&t));
	j_node_free(&j, "node_free_mib");
	{
		void **pages = malloc((total_pages ? total_pages : 1) * sizeof(void *));
		size_t k = 0;
		hist_t h;

		if (!pages)
			fatal("out of memory for %zu page addresses", total_pages);
		for (size_t i = 0; i < nregions; i++)
			for (size_t p = 0; p < regions[i].npages; p++)
				pages[k++] = regions[i].addr + p * regions[i].page_size;
		if (query_pages(0, pages, total_pages, &h) < 0) {
			j_obj(&j, "placement");
			j_fail(&j, "move_pages", errno);
			j_obj_end(&j);
		} else {
			j_hist(&j, "placement", &h);
		}
		free(pages);
	}
	j_hold(&j, failed ? &(hold_opts_t){0, 0} : &hold);
	j_key_raw(&j, "steps", steps.buf);
	j_obj_end(&j);
	j_print(&j, stdout);
	j_free(&j);
	j_free(&steps);
	if (!failed)
		hold_run(&hold);
	return 0;
}
