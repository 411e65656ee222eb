/* Shared code of the guest workload programs: see common.h.
 *
 * Long on purpose: it is the one helper file every program links, so that no
 * program copies another's JSON writer, option parsing or syscall wrappers.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const char *nh_usage = "";

/* ------------------------------------------------------------------ masks */

void mask_set(nodemask_t *m, int node)
{
	m->bits[node / (8 * sizeof(unsigned long))] |= 1UL << (node % (8 * sizeof(unsigned long)));
}

int mask_isset(const nodemask_t *m, int node)
{
	return (m->bits[node / (8 * sizeof(unsigned long))] >> (node % (8 * sizeof(unsigned long)))) & 1;
}

int mask_empty(const nodemask_t *m)
{
	for (size_t i = 0; i < NH_MASK_WORDS; i++)
		if (m->bits[i])
			return 0;
	return 1;
}

static int parse_node(const char **p)
{
	char *end;
	long v;

	if (**p < '0' || **p > '9')
		return -1;
	errno = 0;
	v = strtol(*p, &end, 10);
	if (errno || v < 0 || v >= NH_MAX_NODES)
		return -1;
	*p = end;
	return (int)v;
}

int mask_parse(const char *s, nodemask_t *m)
{
	const char *p = s;

	memset(m, 0, sizeof(*m));
	while (*p == ' ')
		p++;
	if (*p == '\0' || *p == '\n')
		return 0;
	for (;;) {
		int lo = parse_node(&p), hi = lo;

		if (lo < 0)
			return -1;
		if (*p == '-') {
			p++;
			hi = parse_node(&p);
			if (hi < lo)
				return -1;
		}
		for (int n = lo; n <= hi; n++)
			mask_set(m, n);
		if (*p == ',') {
			p++;
			continue;
		}
		return (*p == '\0' || *p == '\n') ? 0 : -1;
	}
}

void mask_format(const nodemask_t *m, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int n = 0; n < NH_MAX_NODES; n++) {
		int hi = n;

		if (!mask_isset(m, n))
			continue;
		while (hi + 1 < NH_MAX_NODES && mask_isset(m, hi + 1))
			hi++;
		if (used < len) {
			int w = hi > n ? snprintf(buf + used, len - used, "%s%d-%d", used ? "," : "", n, hi)
				       : snprintf(buf + used, len - used, "%s%d", used ? "," : "", n);
			used += w > 0 ? (size_t)w : 0;
		}
		n = hi;
	}
}

/* --------------------------------------------------------------- syscalls */

/* mbind, set_mempolicy and migrate_pages read maxnode-1 bits (a historical
 * off-by-one every caller, libnuma included, compensates for). */
long sys_mbind(void *addr, unsigned long len, int mode, const nodemask_t *nodes, unsigned flags)
{
	return syscall(SYS_mbind, addr, len, mode, nodes ? nodes->bits : NULL,
		       nodes ? NH_MAX_NODES + 1 : 0, flags);
}

long sys_set_mempolicy(int mode, const nodemask_t *nodes)
{
	return syscall(SYS_set_mempolicy, mode, nodes ? nodes->bits : NULL, nodes ? NH_MAX_NODES + 1 : 0);
}

long sys_get_mempolicy(int *mode, nodemask_t *nodes, void *addr, unsigned long flags)
{
	if (nodes)
		memset(nodes, 0, sizeof(*nodes));
	return syscall(SYS_get_mempolicy, mode, nodes ? nodes->bits : NULL, nodes ? NH_MAX_NODES : 0, addr, flags);
}

long sys_move_pages(pid_t pid, unsigned long count, void **pages, const int *nodes, int *status, int flags)
{
	return syscall(SYS_move_pages, pid, count, pages, nodes, status, flags);
}

long sys_migrate_pages(pid_t pid, const nodemask_t *old_nodes, const nodemask_t *new_nodes)
{
	return syscall(SYS_migrate_pages, pid, NH_MAX_NODES + 1, old_nodes->bits, new_nodes->bits);
}

/* ------------------------------------------------------------------ names */

const char *errno_name(int err)
{
	static char buf[16];
	const char *n = err > 0 ? strerrorname_np(err) : NULL;

	if (n)
		return n;
	snprintf(buf, sizeof(buf), "E%d", err);
	return buf;
}

static const char *const policy_names[] = {
	[NH_MPOL_DEFAULT] = "default",
	[NH_MPOL_PREFERRED] = "preferred",
	[NH_MPOL_BIND] = "bind",
	[NH_MPOL_INTERLEAVE] = "interleave",
	[NH_MPOL_LOCAL] = "local",
	[NH_MPOL_PREFERRED_MANY] = "preferred-many",
	[NH_MPOL_WEIGHTED_INTERLEAVE] = "weighted-interleave",
};
#define N_POLICIES ((int)(sizeof(policy_names) / sizeof(policy_names[0])))

int policy_mode(const char *name)
{
	for (int i = 0; i < N_POLICIES; i++)
		if (strcmp(name, policy_names[i]) == 0)
			return i;
	return -1;
}

const char *policy_name(int mode)
{
	static char buf[24];

	if (mode >= 0 && mode < N_POLICIES)
		return policy_names[mode];
	snprintf(buf, sizeof(buf), "mode%d", mode);
	return buf;
}

/* ------------------------------------------------------------------- JSON */

void j_init(json_t *j)
{
	memset(j, 0, sizeof(*j));
	j->first[0] = 1;
}

void j_free(json_t *j)
{
	free(j->buf);
	j->buf = NULL;
}

static void j_raw(json_t *j, const char *s, size_t n)
{
	if (j->len + n + 1 > j->cap) {
		size_t cap = j->cap ? j->cap : 4096;

		while (j->len + n + 1 > cap)
			cap *= 2;
		j->buf = realloc(j->buf, cap);
		if (!j->buf)
			fatal("out of memory for the JSON output");
		j->cap = cap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
	j->buf[j->len] = '\0';
}

static void j_puts(json_t *j, const char *s)
{
	j_raw(j, s, strlen(s));
}

static void j_quoted(json_t *j, const char *s)
{
	j_raw(j, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		char esc[8];

		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			j_raw(j, esc, 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			j_puts(j, esc);
		} else {
			j_raw(j, (const char *)p, 1);
		}
	}
	j_raw(j, "\"", 1);
}

static void j_key(json_t *j, const char *key)
{
	if (!j->first[j->depth])
		j_raw(j, ",", 1);
	j->first[j->depth] = 0;
	if (key) {
		j_quoted(j, key);
		j_raw(j, ":", 1);
	}
}

static void j_open(json_t *j, const char *key, const char *brace)
{
	j_key(j, key);
	j_puts(j, brace);
	if (++j->depth >= (int)(sizeof(j->first) / sizeof(j->first[0])))
		fatal("JSON nested too deep");
	j->first[j->depth] = 1;
}

void j_obj(json_t *j, const char *key) { j_open(j, key, "{"); }
void j_arr(json_t *j, const char *key) { j_open(j, key, "["); }
void j_obj_end(json_t *j) { j->depth--; j_puts(j, "}"); }
void j_arr_end(json_t *j) { j->depth--; j_puts(j, "]"); }

void j_str(json_t *j, const char *key, const char *val)
{
	j_key(j, key);
	if (val)
		j_quoted(j, val);
	else
		j_puts(j, "null");
}

void j_int(json_t *j, const char *key, long long val)
{
	char b[32];

	j_key(j, key);
	snprintf(b, sizeof(b), "%lld", val);
	j_puts(j, b);
}

void j_num(json_t *j, const char *key, double val)
{
	char b[48];

	j_key(j, key);
	snprintf(b, sizeof(b), "%.6f", val);
	j_puts(j, b);
}

void j_bool(json_t *j, const char *key, int val)
{
	j_key(j, key);
	j_puts(j, val ? "true" : "false");
}

void j_null(json_t *j, const char *key)
{
	j_key(j, key);
	j_puts(j, "null");
}

void j_key_raw(json_t *j, const char *key, const char *json)
{
	j_key(j, key);
	j_puts(j, json ? json : "null");
}

void j_print(json_t *j, FILE *f)
{
	fputs(j->buf ? j->buf : "", f);
	fputc('\n', f);
	if (fflush(f) != 0 || ferror(f)) {
		/* A report nobody can read (its file's disk is full): a holding program would
		 * hold forever unseen, so end now; the caller sees it exit without a report. */
		int err = errno;

		fprintf(stderr, "cannot write the report: %s\n", strerror(err));
		exit(EXIT_REPORT_LOST);
	}
}

void j_fail(json_t *j, const char *call, int err)
{
	j_bool(j, "ok", 0);
	j_str(j, "call", call);
	j_int(j, "errno", err);
	j_str(j, "error", errno_name(err));
}

/* ---------------------------------------------------------------- options */

void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "error: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: %s\n", nh_usage);
	exit(2);
}

void fatal(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fatal: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

long long parse_int(const char *opt, const char *s, long long min, long long max)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		usage_error("%s wants an integer in %lld..%lld, not '%s'", opt, min, max, s);
	return v;
}

double parse_seconds(const char *opt, const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < 0)
		usage_error("%s wants seconds >= 0, not '%s'", opt, s);
	return v;
}

void parse_mask_opt(const char *opt, const char *s, nodemask_t *m)
{
	if (mask_parse(s, m) < 0)
		usage_error("%s wants a node list like 0-1,3 (nodes < %d), not '%s'", opt, NH_MAX_NODES, s);
}

/* ----------------------------------------------------------------- policy */

void policy_init(policy_t *p)
{
	memset(p, 0, sizeof(*p));
	p->mode = NH_MPOL_DEFAULT;
	p->via_mbind = 1;
}

int policy_opt(policy_t *p, int opt, const char *arg)
{
	switch (opt) {
	case OPT_POLICY:
		p->mode = policy_mode(arg);
		if (p->mode < 0)
			usage_error("unknown --policy '%s'", arg);
		return 1;
	case OPT_NODES:
		parse_mask_opt("--nodes", arg, &p->nodes);
		return 1;
	case OPT_VIA:
		if (strcmp(arg, "mbind") == 0)
			p->via_mbind = 1;
		else if (strcmp(arg, "set_mempolicy") == 0)
			p->via_mbind = 0;
		else
			usage_error("--via wants mbind or set_mempolicy, not '%s'", arg);
		return 1;
	case OPT_MOVE:
		p->flags |= NH_MPOL_MF_MOVE;
		return 1;
	case OPT_MOVE_ALL:
		p->flags |= NH_MPOL_MF_MOVE_ALL;
		return 1;
	case OPT_STRICT:
		p->flags |= NH_MPOL_MF_STRICT;
		return 1;
	}
	return 0;
}

void policy_check(const policy_t *p)
{
	if (p->flags && !p->via_mbind)
		usage_error("--move, --move-all and --strict are mbind flags: use --via mbind");
}

int policy_apply_task(const policy_t *p, const char **call)
{
	if (p->via_mbind)
		return 0;
	*call = "set_mempolicy";
	return sys_set_mempolicy(p->mode, &p->nodes) < 0 ? -1 : 0;
}

int policy_apply_range(const policy_t *p, void *addr, size_t len, const char **call)
{
	if (!p->via_mbind)
		return 0;
	*call = "mbind";
	return sys_mbind(addr, len, p->mode, &p->nodes, p->flags) < 0 ? -1 : 0;
}

void j_policy(json_t *j, const char *key, const policy_t *p)
{
	char buf[512];

	mask_format(&p->nodes, buf, sizeof(buf));
	j_obj(j, key);
	j_str(j, "mode", policy_name(p->mode));
	j_str(j, "nodes", buf);
	j_str(j, "via", p->via_mbind ? "mbind" : "set_mempolicy");
	j_arr(j, "flags");
	if (p->flags & NH_MPOL_MF_STRICT)
		j_str(j, NULL, "strict");
	if (p->flags & NH_MPOL_MF_MOVE)
		j_str(j, NULL, "move");
	if (p->flags & NH_MPOL_MF_MOVE_ALL)
		j_str(j, NULL, "move-all");
	j_arr_end(j);
	j_obj_end(j);
}

/* ---------------------------------------------------------------- regions */

static const char *const kind_names[] = {"anon", "shared", "memfd", "file"};
static const char *const thp_names[] = {"default", "on", "off"};

static int name_index(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

int kind_parse(const char *s) { return name_index(s, kind_names, 4); }
const char *kind_name(int kind) { return kind_names[kind]; }
int thp_parse(const char *s) { return name_index(s, thp_names, 3); }
const char *thp_name(int thp) { return thp_names[thp]; }

int region_map(region_t *r, size_t size, int kind, int thp, const char **call)
{
	int fd = -1, flags = MAP_PRIVATE | MAP_ANONYMOUS;
	void *p;

	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->page_size = (size_t)sysconf(_SC_PAGESIZE);
	r->size = (size + r->page_size - 1) / r->page_size * r->page_size;
	r->npages = r->size / r->page_size;
	if (kind == KIND_SHARED) {
		flags = MAP_SHARED | MAP_ANONYMOUS;
	} else if (kind == KIND_MEMFD || kind == KIND_FILE) {
		if (kind == KIND_MEMFD) {
			*call = "memfd_create";
			fd = memfd_create("numa-harness", 0);
		} else {
			*call = "open";
			snprintf(r->path, sizeof(r->path), "/tmp/numa-harness-%d", (int)getpid());
			fd = open(r->path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		}
		if (fd < 0)
			return -1;
		*call = "ftruncate";
		if (ftruncate(fd, (off_t)r->size) < 0) {
			int e = errno;

			close(fd);
			errno = e;
			return -1;
		}
		flags = MAP_SHARED;
	}
	*call = "mmap";
	p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (fd >= 0) {
		int e = errno;

		close(fd);
		if (kind == KIND_FILE)
			unlink(r->path); /* freed with the mapping, even if we are killed */
		errno = e;
	}
	if (p == MAP_FAILED)
		return -1;
	r->addr = p;
	if (thp != THP_DEFAULT) {
		*call = "madvise";
		if (madvise(p, r->size, thp == THP_ON ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0) {
			int e = errno;

			munmap(p, r->size);
			r->addr = NULL;
			errno = e;
			return -1;
		}
	}
	return 0;
}

void region_unmap(region_t *r)
{
	if (r->addr)
		munmap(r->addr, r->size);
	r->addr = NULL;
}

void region_touch(region_t *r)
{
	for (size_t i = 0; i < r->npages; i++)
		((volatile char *)r->addr)[i * r->page_size] = 1;
}

void region_fill(region_t *r, uint64_t seed)
{
	uint64_t *w = (uint64_t *)r->addr, x = seed * 0x9e3779b97f4a7c15ULL + 1;

	for (size_t i = 0; i < r->size / sizeof(uint64_t); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
}

uint64_t region_checksum(const region_t *r)
{
	const uint64_t *w = (const uint64_t *)r->addr;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < r->size / sizeof(uint64_t); i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

void **region_pages(const region_t *r, size_t n)
{
	void **pages = malloc((n ? n : 1) * sizeof(void *));

	if (!pages)
		fatal("out of memory for %zu page addresses", n);
	for (size_t i = 0; i < n; i++)
		pages[i] = r->addr + i * r->page_size;
	return pages;
}

void region_opts_init(region_opts_t *o)
{
	o->size_mib = -1;
	o->kind = KIND_ANON;
	o->thp = THP_OFF;
}

int region_opt(region_opts_t *o, int opt, const char *arg)
{
	switch (opt) {
	case OPT_SIZE:
		o->size_mib = parse_int("--size", arg, 0, 1LL << 30);
		return 1;
	case OPT_KIND:
		o->kind = kind_parse(arg);
		if (o->kind < 0)
			usage_error("--kind wants anon, shared, memfd or file, not '%s'", arg);
		return 1;
	case OPT_THP:
		o->thp = thp_parse(arg);
		if (o->thp < 0)
			usage_error("--thp wants on, off or default, not '%s'", arg);
		return 1;
	}
	return 0;
}

void region_opts_check(const region_opts_t *o)
{
	if (o->size_mib < 0)
		usage_error("--size MiB is required");
}

void j_region(json_t *j, const region_opts_t *o, const region_t *r)
{
	j_int(j, "size_mib", o->size_mib);
	j_str(j, "kind", kind_name(o->kind));
	j_str(j, "thp", thp_name(o->thp));
	j_int(j, "page_size", (long long)(r->page_size ? r->page_size : (size_t)sysconf(_SC_PAGESIZE)));
	j_int(j, "npages", (long long)r->npages);
}

/* ------------------------------------------------------------------ pages */

void hist_clear(hist_t *h)
{
	memset(h, 0, sizeof(*h));
}

void hist_add(hist_t *h, int status)
{
	h->total++;
	if (status >= 0 && status < NH_MAX_NODES)
		h->nodes[status]++;
	else if (status < 0 && -status < (int)(sizeof(h->errs) / sizeof(h->errs[0])))
		h->errs[-status]++;
	else
		h->other++;
}

void j_hist(json_t *j, const char *key, const hist_t *h)
{
	char k[16];

	j_obj(j, key);
	j_obj(j, "pages");
	for (int n = 0; n < NH_MAX_NODES; n++) {
		if (h->nodes[n]) {
			snprintf(k, sizeof(k), "%d", n);
			j_int(j, k, h->nodes[n]);
		}
	}
	j_obj_end(j);
	j_obj(j, "page_errors");
	for (int e = 1; e < (int)(sizeof(h->errs) / sizeof(h->errs[0])); e++)
		if (h->errs[e])
			j_int(j, errno_name(e), h->errs[e]);
	if (h->other)
		j_int(j, "other", h->other);
	j_obj_end(j);
	j_int(j, "total", h->total);
	j_obj_end(j);
}

int query_pages(pid_t pid, void **pages, size_t n, hist_t *h)
{
	int *status = malloc((n ? n : 1) * sizeof(int));

	if (!status)
		fatal("out of memory for %zu page statuses", n);
	hist_clear(h);
	if (n && sys_move_pages(pid, n, pages, NULL, status, 0) < 0) {
		int e = errno;

		free(status);
		errno = e;
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		hist_add(h, status[i]);
	free(status);
	return 0;
}

int numa_maps_anon(pid_t pid, hist_t *h)
{
	char path[64], line[4096];
	FILE *f;

	hist_clear(h);
	snprintf(path, sizeof(path), "/proc/%d/numa_maps", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok;
		int anon = 0;
		long per[NH_MAX_NODES / 64]; /* nodes seen on one line: few */
		int ids[NH_MAX_NODES / 64], n = 0;

		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			if (strncmp(tok, "anon=", 5) == 0)
				anon = 1;
			else if (tok[0] == 'N' && tok[1] >= '0' && tok[1] <= '9' && n < NH_MAX_NODES / 64) {
				char *eq = strchr(tok, '=');
				int id = atoi(tok + 1);

				if (eq && id >= 0 && id < NH_MAX_NODES) {
					ids[n] = id;
					per[n++] = atol(eq + 1);
				}
			}
		}
		if (!anon)
			continue;
		for (int i = 0; i < n; i++) {
			h->nodes[ids[i]] += per[i];
			h->total += per[i];
		}
	}
	fclose(f);
	return 0;
}

/* ----------------------------------------------------------- system state */

static int read_file(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

int nodes_online(nodemask_t *m)
{
	char buf[4096];

	if (read_file("/sys/devices/system/node/online", buf, sizeof(buf)) < 0)
		return -1;
	return mask_parse(buf, m);
}

/* "<prefix>Field:   123 kB" lines; prefix is "Node N " in node meminfo. */
static long long meminfo_field(const char *path, const char *field)
{
	char line[256];
	size_t flen = strlen(field);
	long long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = line;

		if (strncmp(p, "Node ", 5) == 0) { /* skip "Node N " */
			p = strchr(p + 5, ' ');
			if (!p)
				continue;
			p++;
		}
		if (strncmp(p, field, flen) == 0 && p[flen] == ':') {
			v = atoll(p + flen + 1);
			break;
		}
	}
	fclose(f);
	return v;
}

long long node_meminfo_kib(int node, const char *field)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/meminfo", node);
	return meminfo_field(path, field);
}

long long meminfo_kib(const char *field)
{
	return meminfo_field("/proc/meminfo", field);
}

void j_node_free(json_t *j, const char *key)
{
	nodemask_t on;
	char k[16];

	j_obj(j, key);
	if (nodes_online(&on) == 0) {
		for (int n = 0; n < NH_MAX_NODES; n++) {
			long long kib;

			if (!mask_isset(&on, n) || (kib = node_meminfo_kib(n, "MemFree")) < 0)
				continue;
			snprintf(k, sizeof(k), "%d", n);
			j_num(j, k, kib / 1024.0);
		}
	}
	j_obj_end(j);
}

double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void j_policy_readback(json_t *j, const char *key, void *addr)
{
	int mode = -1;
	nodemask_t m;
	char buf[512];

	j_obj(j, key);
	if (sys_get_mempolicy(&mode, &m, addr, addr ? NH_MPOL_F_ADDR : 0) < 0) {
		j_fail(j, "get_mempolicy", errno);
	} else {
		j_bool(j, "ok", 1);
		j_str(j, "mode", policy_name(mode & ~NH_MPOL_MODE_FLAGS));
		j_int(j, "mode_flags", mode & NH_MPOL_MODE_FLAGS);
		mask_format(&m, buf, sizeof(buf));
		j_str(j, "nodes", buf);
	}
	j_obj_end(j);
}

/* ---------------------------------------------------------------- holding */

static sigset_t hold_set;

void hold_prepare(void)
{
	sigemptyset(&hold_set);
	sigaddset(&hold_set, SIGTERM);
	sigaddset(&hold_set, SIGINT);
	sigaddset(&hold_set, SIGHUP);
	sigaddset(&hold_set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &hold_set, NULL);
}

int hold_wait(double seconds)
{
	double end = now() + seconds;
	int sig;

	if (seconds < 0) {
		while (sigwait(&hold_set, &sig) != 0)
			;
		return sig;
	}
	for (;;) {
		double left = end - now();
		struct timespec ts;

		if (left <= 0)
			return 0;
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		sig = sigtimedwait(&hold_set, NULL, &ts);
		if (sig > 0)
			return sig;
		if (errno != EINTR)
			return 0;
	}
}

int hold_poll(void)
{
	struct timespec zero = {0, 0};
	int sig = sigtimedwait(&hold_set, NULL, &zero);

	return sig > 0 ? sig : 0;
}

int hold_opt(hold_opts_t *h, int opt, const char *arg)
{
	switch (opt) {
	case OPT_HOLD:
		h->seconds = parse_seconds("--hold", arg);
		break;
	case OPT_HOLD_SIGNAL:
		h->seconds = -1;
		break;
	default:
		return 0;
	}
	h->enabled = 1;
	hold_prepare();
	return 1;
}

void j_hold(json_t *j, const hold_opts_t *h)
{
	if (!h->enabled) {
		j_null(j, "hold");
		return;
	}
	j_obj(j, "hold");
	if (h->seconds < 0)
		j_bool(j, "until_signal", 1);
	else
		j_num(j, "seconds", h->seconds);
	j_obj_end(j);
}

int hold_run(const hold_opts_t *h)
{
	int sig;

	if (!h->enabled)
		return 0;
	sig = hold_wait(h->seconds);
	if (sig)
		fprintf(stderr, "hold ended by signal %d\n", sig);
	return sig;
}
