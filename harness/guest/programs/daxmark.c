/* daxmark: write or read a short text at the start of a device-dax device, through mmap.
 *
 * Device dax (/dev/daxN.M) has no read(2)/write(2); it is only mapped. So a test
 * that keeps data in persistent memory across boots writes a marker with
 *   daxmark --dev /dev/dax0.0 --write TEXT
 * and reads it back in a later boot with
 *   daxmark --dev /dev/dax0.0 --read LEN
 * The mapping is one alignment unit of the device (its sysfs "align", 2 MiB if that
 * cannot be read), shared, at offset 0. See README.md.
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

enum { OPT_DEV = OPT_FIRST_FREE, OPT_WRITE, OPT_READ };

#define MAX_TEXT 4096

/* The device's mapping alignment from /sys/bus/dax/devices/<name>/align. */
static size_t dax_align(const char *dev)
{
	const char *name = strrchr(dev, '/');
	char path[256];
	unsigned long long v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/dax/devices/%s/align", name ? name + 1 : dev);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v ? (size_t)v : (size_t)2 << 20;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dev", 1, 0, OPT_DEV}, {"write", 1, 0, OPT_WRITE}, {"read", 1, 0, OPT_READ}, {0, 0, 0, 0},
	};
	const char *dev = NULL, *text = NULL;
	long long len = -1;
	size_t map_size;
	char buf[MAX_TEXT + 1];
	char *p;
	int fd, opt;
	json_t j;

	nh_usage = "daxmark --dev /dev/daxN.M (--write TEXT | --read LEN)";
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case OPT_DEV:
			dev = optarg;
			break;
		case OPT_WRITE:
			text = optarg;
			break;
		case OPT_READ:
			len = parse_int("--read", optarg, 1, MAX_TEXT);
			break;
		default:
			usage_error("unknown option");
		}
	}
	if (optind != argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (!dev)
		usage_error("--dev is required");
	if ((text != NULL) == (len >= 0))
		usage_error("give exactly one of --write and --read");
	if (text && strlen(text) > MAX_TEXT)
		usage_error("--write takes at most %d bytes", MAX_TEXT);

	j_init(&j);
	j_obj(&j, NULL);
	j_str(&j, "dev", dev);
	map_size = dax_align(dev);
	j_int(&j, "map_size", (long long)map_size);
	fd = open(dev, O_RDWR);
	if (fd < 0) {
		j_fail(&j, "open", errno);
		goto out;
	}
	p = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		j_fail(&j, "mmap", errno);
		close(fd);
		goto out;
	}
	if (text) {
		memcpy(p, text, strlen(text) + 1); /* with its NUL: a shorter marker ends a longer one */
		j_int(&j, "wrote", (long long)strlen(text));
	} else {
		memcpy(buf, p, (size_t)len);
		buf[len] = '\0';
		/* Stop at the first byte that is not printable ASCII: fresh media reads as zeros. */
		for (p = buf; *p >= 0x20 && *p < 0x7f; p++)
			;
		*p = '\0';
		j_str(&j, "text", buf);
	}
	j_bool(&j, "ok", 1);
	close(fd);
out:
	j_obj_end(&j);
	j_print(&j, stdout);
	j_free(&j);
	return 0;
}
