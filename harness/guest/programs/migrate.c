/* migrate: migrate_pages(2) of a running process from one node set to another.
 *
 * --pid P: an existing process; its per-node pages come from /proc/P/numa_maps.
 * Without --pid: a forked child allocates --size MiB bound to the --from nodes
 * (set_mempolicy MPOL_BIND, then back to the default policy), fills it with a
 * pattern and waits; the report then also has an exact move_pages query of the
 * child's buffer before and after, and the child's checksum before and after.
 * See README.md.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { OPT_PID = OPT_FIRST_FREE, OPT_FROM, OPT_TO };

/* What the child tells the parent once its memory is in place. */
struct ready {
	int err;	  /* 0, or the errno of the refused call */
	char call[24];	  /* the refused call */
	char *addr;	  /* the buffer, in the child's address space */
	size_t npages;
	uint64_t checksum;
};

static void child_main(int cmd_fd, int resp_fd, const region_opts_t *ro, const nodemask_t *from)
{
	struct ready rd;
	region_t r = {0};
	const char *call = "set_mempolicy";
	char c;

	memset(&rd, 0, sizeof(rd));
	if (sys_set_mempolicy(NH_MPOL_BIND, from) < 0 ||
	    region_map(&r, (size_t)ro->size_mib << 20, ro->kind, ro->thp, &call) < 0) {
		rd.err = errno;
	} else {
		region_fill(&r, 7);
		call = "set_mempolicy";
		if (sys_set_mempolicy(NH_MPOL_DEFAULT, NULL) < 0)
			rd.err = errno;
		rd.addr = r.addr;
		rd.npages = r.npages;
		rd.checksum = region_checksum(&r);
	}
	if (rd.err)
		snprintf(rd.call, sizeof(rd.call), "%s", call);
	if (write(resp_fd, &rd, sizeof(rd)) != sizeof(rd))
		_exit(1);
	/* 'c': checksum again and answer; anything else or EOF: exit. */
	while (read(cmd_fd, &c, 1) == 1 && c == 'c') {
		uint64_t sum = r.addr ? region_checksum(&r) : 0;

		if (write(resp_fd, &sum, sizeof(sum)) != sizeof(sum))
			_exit(1);
	}
	_exit(0);
}

static void j_checksum(json_t *j, const char *key, uint64_t sum)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)sum);
	j_str(j, key, buf);
}

static void j_numa_maps(json_t *j, const char *key, pid_t pid)
{
	hist_t h;

	if (numa_maps_anon(pid, &h) < 0) {
		j_obj(j, key);
		j_fail(j, "open numa_maps", errno);
		j_obj_end(j);
	} else {
		j_hist(j, key, &h);
	}
}

static void j_query(json_t *j, const char *key, pid_t pid, void **pages, size_t n)
{
	hist_t h;

	if (!pages) {
		j_null(j, key);
	} else if (query_pages(pid, pages, n, &h) < 0) {
		j_obj(j, key);
		j_fail(j, "move_pages", errno);
		j_obj_end(j);
	} else {
		j_hist(j, key, &h);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		REGION_LONG_OPTIONS,
		{"pid", 1, 0, OPT_PID}, {"from", 1, 0, OPT_FROM}, {"to", 1, 0, OPT_TO}, {0, 0, 0, 0},
	};
	region_opts_t ro;
	nodemask_t from, to;
	int have_from = 0, have_to = 0, opt, failed = 0;
	pid_t target = 0, child = 0;
	int cmd[2] = {-1, -1}, resp[2] = {-1, -1};
	struct ready rd;
	void **pages = NULL;
	uint64_t sum_after = 0;
	long ret = -1;
	const char *call = "migrate_pages";
	double t0, t_migrate = 0;
	char buf[512];
	json_t j;

	nh_usage = "migrate --from LIST --to LIST (--pid PID | " REGION_USAGE ")";
	region_opts_init(&ro);
	memset(&rd, 0, sizeof(rd));
	memset(&from, 0, sizeof(from));
	memset(&to, 0, sizeof(to));
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (region_opt(&ro, opt, optarg))
			continue;
		switch (opt) {
		case OPT_PID:
			target = (pid_t)parse_int("--pid", optarg, 1, 1 << 30);
			break;
		case OPT_FROM:
			parse_mask_opt("--from", optarg, &from);
			have_from = 1;
			break;
		case OPT_TO:
			parse_mask_opt("--to", optarg, &to);
			have_to = 1;
			break;
		default:
			usage_error("unknown option");
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!have_from || !have_to)
		usage_error("--from and --to are required");
	if (target && ro.size_mib >= 0)
		usage_error("--size is for the child migrate spawns: not with --pid");
	if (!target)
		region_opts_check(&ro);

	if (!target) {
		if (pipe(cmd) < 0 || pipe(resp) < 0)
			fatal("pipe: %s", errno_name(errno));
		fflush(NULL);
		child = fork();
		if (child < 0)
			fatal("fork: %s", errno_name(errno));
		if (child == 0) {
			close(cmd[1]);
			close(resp[0]);
			child_main(cmd[0], resp[1], &ro, &from);
		}
		close(cmd[0]);
		close(resp[1]);
		if (read(resp[0], &rd, sizeof(rd)) != sizeof(rd))
			fatal("the child holding the memory died before it was ready");
		target = child;
		if (rd.err) {
			failed = rd.err;
			call = rd.call;
		} else {
			pages = malloc((rd.npages ? rd.npages : 1) * sizeof(void *));
			if (!pages)
				fatal("out of memory for %zu page addresses", rd.npages);
			for (size_t i = 0; i < rd.npages; i++)
				pages[i] = rd.addr + i * (size_t)sysconf(_SC_PAGESIZE);
		}
	}

	j_init(&j);
	j_obj(&j, NULL);
	j_str(&j, "program", "migrate");
	j_int(&j, "pid", getpid());
	j_int(&j, "target_pid", target);
	j_bool(&j, "spawned", child != 0);
	mask_format(&from, buf, sizeof(buf));
	j_str(&j, "from", buf);
	mask_format(&to, buf, sizeof(buf));
	j_str(&j, "to", buf);
	if (child) {
		j_int(&j, "size_mib", ro.size_mib);
		j_str(&j, "kind", kind_name(ro.kind));
		j_str(&j, "thp", thp_name(ro.thp));
		j_int(&j, "npages", (long long)rd.npages);
	}
	j_numa_maps(&j, "numa_maps_before", target);
	j_query(&j, "pages_before", target, pages, rd.npages);
	if (!failed) {
		t0 = now();
		ret = sys_migrate_pages(target, &from, &to);
		t_migrate = now() - t0;
		if (ret < 0)
			failed = errno;
	}
	if (failed)
		j_fail(&j, call, failed);
	else
		j_bool(&j, "ok", 1);
	if (ret >= 0)
		j_int(&j, "not_migrated", ret);
	else
		j_null(&j, "not_migrated");
	j_numa_maps(&j, "numa_maps_after", target);
	j_query(&j, "pages_after", target, pages, rd.npages);
	if (pages) {
		char c = 'c';

		if (write(cmd[1], &c, 1) != 1 || read(resp[0], &sum_after, sizeof(sum_after)) != sizeof(sum_after))
			fatal("the child holding the memory died before its second checksum");
		j_checksum(&j, "checksum_before", rd.checksum);
		j_checksum(&j, "checksum_after", sum_after);
		j_bool(&j, "checksum_match", rd.checksum == sum_after);
	}
	j_obj(&j, "elapsed");
	j_num(&j, "migrate_s", t_migrate);
	j_obj_end(&j);
	j_obj_end(&j);
	if (child) {
		int st;

		close(cmd[1]); /* EOF: the child exits */
		waitpid(child, &st, 0);
	}
	j_print(&j, stdout);
	j_free(&j);
	free(pages);
	return 0;
}
