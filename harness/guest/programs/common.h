/* Shared code of the guest workload programs (place, move, migrate, pressure).
 *
 * Each program prints exactly one JSON object on stdout and exits 0 when it ran,
 * even if the kernel refused a call (that is data: "ok": false with the call,
 * errno and its name). Exit 2 is a usage error, exit 1 a harness-side failure
 * (out of memory for the program's own bookkeeping, a fork that failed).
 * Memory-policy syscalls are raw syscall() calls: no libnuma.
 */
#ifndef NH_COMMON_H
#define NH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit status of a program whose JSON report could not be written (e.g. no space left). */
#define EXIT_REPORT_LOST 74

/* ---- memory policy constants (uapi/linux/mempolicy.h) ---- */
#define NH_MPOL_DEFAULT 0
#define NH_MPOL_PREFERRED 1
#define NH_MPOL_BIND 2
#define NH_MPOL_INTERLEAVE 3
#define NH_MPOL_LOCAL 4
#define NH_MPOL_PREFERRED_MANY 5
#define NH_MPOL_WEIGHTED_INTERLEAVE 6
#define NH_MPOL_MF_STRICT (1 << 0)
#define NH_MPOL_MF_MOVE (1 << 1)
#define NH_MPOL_MF_MOVE_ALL (1 << 2)
#define NH_MPOL_F_NODE (1 << 0)
#define NH_MPOL_F_ADDR (1 << 1)
/* mode flags the kernel may OR into a mode read back by get_mempolicy */
#define NH_MPOL_MODE_FLAGS ((1 << 15) | (1 << 14) | (1 << 13))

/* ---- node masks ---- */
#define NH_MAX_NODES 1024
#define NH_MASK_WORDS (NH_MAX_NODES / (8 * sizeof(unsigned long)))
typedef struct {
	unsigned long bits[NH_MASK_WORDS];
} nodemask_t;

/* Parse "0-1,3" (empty string = empty mask). Returns 0, or -1 if malformed. */
int mask_parse(const char *s, nodemask_t *m);
void mask_set(nodemask_t *m, int node);
int mask_isset(const nodemask_t *m, int node);
int mask_empty(const nodemask_t *m);
/* "0-1,3" into buf (always NUL-terminated). */
void mask_format(const nodemask_t *m, char *buf, size_t len);

/* ---- raw syscalls; each returns the syscall's result, errno set on -1 ---- */
long sys_mbind(void *addr, unsigned long len, int mode, const nodemask_t *nodes, unsigned flags);
long sys_set_mempolicy(int mode, const nodemask_t *nodes);
long sys_get_mempolicy(int *mode, nodemask_t *nodes, void *addr, unsigned long flags);
long sys_move_pages(pid_t pid, unsigned long count, void **pages, const int *nodes, int *status, int flags);
long sys_migrate_pages(pid_t pid, const nodemask_t *old_nodes, const nodemask_t *new_nodes);

/* ---- names ---- */
const char *errno_name(int err); /* "EINVAL", or "E<n>" if unknown */
/* policy name ("bind", "weighted-interleave", ...) -> mode; -1 if unknown */
int policy_mode(const char *name);
const char *policy_name(int mode); /* mode without flags -> name, "mode<n>" if unknown */

/* ---- JSON writer: builds one document in memory ---- */
typedef struct {
	char *buf;
	size_t len, cap;
	int depth;
	int first[32]; /* nothing written yet at this depth */
} json_t;

void j_init(json_t *j);
void j_free(json_t *j);
/* key is NULL inside arrays and at the top level */
void j_obj(json_t *j, const char *key);
void j_obj_end(json_t *j);
void j_arr(json_t *j, const char *key);
void j_arr_end(json_t *j);
void j_str(json_t *j, const char *key, const char *val); /* val NULL -> null */
void j_int(json_t *j, const char *key, long long val);
void j_num(json_t *j, const char *key, double val);
void j_bool(json_t *j, const char *key, int val);
void j_null(json_t *j, const char *key);
/* A value already written as JSON (e.g. another json_t's buf) under key. */
void j_key_raw(json_t *j, const char *key, const char *json);
/* Write the document plus a newline to f and flush. */
void j_print(json_t *j, FILE *f);

/* "ok": false, "call", "errno", "error" (the name) for a refused call */
void j_fail(json_t *j, const char *call, int err);

/* ---- usage and parsing of option values (usage errors exit 2) ---- */
extern const char *nh_usage; /* the program's one-line usage, set in main */
void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
long long parse_int(const char *opt, const char *s, long long min, long long max);
double parse_seconds(const char *opt, const char *s);
void parse_mask_opt(const char *opt, const char *s, nodemask_t *m);

/* ---- the policy options shared by place and pressure ----
 * --policy NAME --nodes LIST --via mbind|set_mempolicy --move --move-all --strict */
typedef struct {
	int mode;
	nodemask_t nodes;
	int via_mbind; /* 1: mbind on the region (default), 0: set_mempolicy for the task */
	unsigned flags; /* NH_MPOL_MF_* for mbind */
} policy_t;

enum {
	OPT_POLICY = 1000, OPT_NODES, OPT_VIA, OPT_MOVE, OPT_MOVE_ALL, OPT_STRICT,
	OPT_SIZE, OPT_KIND, OPT_THP, OPT_HOLD, OPT_HOLD_SIGNAL,
	OPT_FIRST_FREE /* programs number their own options from here */
};
#define POLICY_LONG_OPTIONS                                                                             \
	{"policy", 1, 0, OPT_POLICY}, {"nodes", 1, 0, OPT_NODES}, {"via", 1, 0, OPT_VIA},                \
	{"move", 0, 0, OPT_MOVE}, {"move-all", 0, 0, OPT_MOVE_ALL}, {"strict", 0, 0, OPT_STRICT}
#define POLICY_USAGE                                                                                    \
	"[--policy default|bind|preferred|preferred-many|interleave|weighted-interleave|local] "         \
	"[--nodes LIST] [--via mbind|set_mempolicy] [--move] [--move-all] [--strict]"

void policy_init(policy_t *p);
/* Handle one getopt_long result; returns 1 if it was a policy option. */
int policy_opt(policy_t *p, int opt, const char *arg);
/* After parsing: reject combinations that cannot mean anything (usage error). */
void policy_check(const policy_t *p);
/* set_mempolicy when --via set_mempolicy (else nothing). 0, or -1 with errno and *call. */
int policy_apply_task(const policy_t *p, const char **call);
/* mbind of [addr, addr+len) when --via mbind (else nothing). 0, or -1 with errno and *call. */
int policy_apply_range(const policy_t *p, void *addr, size_t len, const char **call);
/* {"mode", "nodes", "via", "flags": [...]} under key */
void j_policy(json_t *j, const char *key, const policy_t *p);

/* ---- memory regions ---- */
enum kind { KIND_ANON, KIND_SHARED, KIND_MEMFD, KIND_FILE };
enum thp { THP_DEFAULT, THP_ON, THP_OFF };
int kind_parse(const char *s);		/* -1 if unknown */
const char *kind_name(int kind);
int thp_parse(const char *s);		/* -1 if unknown */
const char *thp_name(int thp);

typedef struct {
	char *addr;
	size_t size;
	size_t npages;
	size_t page_size;
	int kind;
	char path[64]; /* the tmpfs file for KIND_FILE (unlinked once mapped) */
} region_t;

/* mmap size bytes of the given kind, madvise THP as asked. Returns 0 or -1
 * with *call set to the refused call's name ("mmap", "memfd_create", "madvise"...). */
int region_map(region_t *r, size_t size, int kind, int thp, const char **call);
void region_unmap(region_t *r);
void region_touch(region_t *r);			   /* write one byte per page */
void region_fill(region_t *r, uint64_t seed);	   /* deterministic pattern */
uint64_t region_checksum(const region_t *r);	   /* FNV-1a style hash of all words */
void **region_pages(const region_t *r, size_t n); /* the first n page addresses (malloc'd) */

/* ---- the region options: --size MiB --kind K --thp on|off|default ---- */
typedef struct {
	long long size_mib; /* -1 until given */
	int kind;
	int thp;
} region_opts_t;
#define REGION_LONG_OPTIONS {"size", 1, 0, OPT_SIZE}, {"kind", 1, 0, OPT_KIND}, {"thp", 1, 0, OPT_THP}
#define REGION_USAGE "--size MiB [--kind anon|shared|memfd|file] [--thp off|on|default]"
void region_opts_init(region_opts_t *o); /* anon, THP off */
int region_opt(region_opts_t *o, int opt, const char *arg); /* 1 if handled */
void region_opts_check(const region_opts_t *o); /* --size given */
/* "size_mib", "kind", "thp", "page_size", "npages" keys */
void j_region(json_t *j, const region_opts_t *o, const region_t *r);

/* ---- the hold options: --hold S | --hold-until-signal ---- */
typedef struct {
	double seconds; /* < 0: until a signal */
	int enabled;
} hold_opts_t;
#define HOLD_LONG_OPTIONS {"hold", 1, 0, OPT_HOLD}, {"hold-until-signal", 0, 0, OPT_HOLD_SIGNAL}
#define HOLD_USAGE "[--hold S | --hold-until-signal]"
int hold_opt(hold_opts_t *h, int opt, const char *arg); /* 1 if handled; blocks the signals */
/* "hold": null | {"seconds": S} | {"until_signal": true} */
void j_hold(json_t *j, const hold_opts_t *h);
/* Hold as asked (after the JSON is out); returns the signal that ended it or 0. */
int hold_run(const hold_opts_t *h);

/* ---- where pages are ---- */
typedef struct {
	long nodes[NH_MAX_NODES]; /* pages per node */
	long errs[160];		  /* pages per -status errno */
	long other;		  /* statuses outside both ranges */
	long total;
} hist_t;

void hist_clear(hist_t *h);
void hist_add(hist_t *h, int status);
/* Writes {"pages": {"0": n, ...}, "page_errors": {"ENOENT": n, ...}} keys into the current object */
void j_hist(json_t *j, const char *key, const hist_t *h);
/* move_pages query (nodes NULL) of the given pages of pid (0 = self). Returns 0 or
 * -1 with errno set (the query itself refused). */
int query_pages(pid_t pid, void **pages, size_t n, hist_t *h);

/* Pages per node summed over a process's anonymous mappings in /proc/PID/numa_maps
 * (N<node>= fields of lines with anon=). Returns 0 or -1 with errno set. */
int numa_maps_anon(pid_t pid, hist_t *h);

/* ---- system state ---- */
/* Online nodes from /sys/devices/system/node/online. */
int nodes_online(nodemask_t *m);
/* Field from /sys/devices/system/node/nodeN/meminfo in KiB, or -1. */
long long node_meminfo_kib(int node, const char *field);
/* Field from /proc/meminfo in KiB, or -1. */
long long meminfo_kib(const char *field);
/* Writes {"0": MiB, ...} of each online node's MemFree under key. */
void j_node_free(json_t *j, const char *key);

double now(void); /* monotonic seconds */
void j_policy_readback(json_t *j, const char *key, void *addr);

/* ---- holding ---- */
/* Block SIGTERM/SIGINT/SIGHUP/SIGUSR1 now, so a signal sent while the program
 * still works is not lost; hold_wait() then waits for one of them (seconds < 0)
 * or seconds. Returns the signal number, or 0 when the time ran out. */
void hold_prepare(void);
int hold_wait(double seconds);
int hold_poll(void); /* a hold signal that arrived (consumed), or 0; never blocks */

#endif
