/*
 * Benchmark client for CUSE loopback devices (fusegate's Go device and the
 * libfuse C device behave the same on these paths). It measures several
 * devices interleaved: the work is cut into ROUNDS slices, and each round
 * runs one slice on every device in turn (starting with a different device
 * each round), so that a change in the machine's load hits all of them
 * alike. Prints one line per device:
 *   <dev> <mode> <param> <value> <unit>
 *
 *   client [-r ROUNDS] DEV[,DEV...] rw CHUNK MIB
 *                         write CHUNK bytes, read them back, until MIB MiB
 *                         went each way: MB/s (one direction)
 *   client ... nbread N   N nonblocking reads of the empty device (EAGAIN):
 *                         ns per request round trip
 *   client ... stat N     N IocStat ioctls (_IOR, one retry each): ns/op
 *   client ... peek N SIZE
 *                         N IocPeek ioctls reading SIZE buffered bytes
 *                         through an embedded pointer (two retries): ns/op
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

struct lb_stat { uint64_t used, capacity; };
struct lb_peek { uint64_t buf; uint32_t len, copied; };
#define LB_STAT  _IOR(0xC5, 1, struct lb_stat)
#define LB_PEEK  _IOWR(0xC5, 2, struct lb_peek)
#define LB_RESET _IO(0xC5, 3)
#define MAXDEV 8

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void full_write(int fd, const char *b, size_t n)
{
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w <= 0)
			die("write");
		b += w;
		n -= w;
	}
}

static void full_read(int fd, char *b, size_t n)
{
	while (n) {
		ssize_t r = read(fd, b, n);
		if (r <= 0)
			die("read");
		b += r;
		n -= r;
	}
}

/* One device under test. */
struct dev {
	const char *path;
	int fd, nfd;
	double secs; /* spent in its slices */
	long done;   /* operations (rw: bytes each way) */
};

static const char *mode;
static size_t size;  /* rw: chunk; peek: bytes */
static char *wbuf, *rbuf, *peekdst;

/* slice runs n operations (rw: n chunks) on d. */
static void slice(struct dev *d, long n)
{
	double t0 = now();
	if (!strcmp(mode, "rw")) {
		for (long i = 0; i < n; i++) {
			full_write(d->fd, wbuf, size);
			full_read(d->fd, rbuf, size);
		}
		d->done += n * size;
		if (n && memcmp(wbuf, rbuf, size)) {
			fprintf(stderr, "%s: data corrupted\n", d->path);
			exit(1);
		}
	} else if (!strcmp(mode, "nbread")) {
		char b[16];
		for (long i = 0; i < n; i++)
			if (read(d->nfd, b, sizeof b) != -1 || errno != EAGAIN)
				die("nonblocking read");
		d->done += n;
	} else if (!strcmp(mode, "stat")) {
		struct lb_stat st;
		for (long i = 0; i < n; i++)
			if (ioctl(d->fd, LB_STAT, &st) != 0)
				die("LB_STAT");
		d->done += n;
	} else {
		struct lb_peek p = { (uintptr_t)peekdst, (uint32_t)size, 0 };
		for (long i = 0; i < n; i++)
			if (ioctl(d->fd, LB_PEEK, &p) != (int)size || p.copied != size)
				die("LB_PEEK");
		d->done += n;
		if (n && memcmp(wbuf, peekdst, size)) {
			fprintf(stderr, "%s: peek corrupted\n", d->path);
			exit(1);
		}
	}
	d->secs += now() - t0;
}

int main(int argc, char **argv)
{
	long rounds = 1;
	int opt;
	while ((opt = getopt(argc, argv, "+r:")) != -1) {
		if (opt != 'r')
			return 2;
		rounds = strtol(optarg, NULL, 0);
	}
	argc -= optind;
	argv += optind;
	if (argc < 3 || rounds < 1) {
		fprintf(stderr, "usage: client [-r ROUNDS] DEV[,DEV...] rw CHUNK MIB | nbread N | stat N | peek N SIZE\n");
		return 2;
	}
	struct dev devs[MAXDEV];
	int ndev = 0;
	for (char *p = strtok(argv[0], ","); p; p = strtok(NULL, ","))
		if (ndev < MAXDEV)
			devs[ndev++] = (struct dev){ .path = p, .nfd = -1 };
	mode = argv[1];
	long a = strtol(argv[2], NULL, 0), total;
	if (!strcmp(mode, "rw")) {
		if (argc < 4)
			return 2;
		size = a;
		total = (strtol(argv[3], NULL, 0) << 20) / size; /* chunks */
	} else if (!strcmp(mode, "nbread") || !strcmp(mode, "stat")) {
		total = a;
	} else if (!strcmp(mode, "peek")) {
		if (argc < 4)
			return 2;
		total = a;
		size = strtoul(argv[3], NULL, 0);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	wbuf = malloc(size + 1);
	rbuf = malloc(size + 1);
	peekdst = malloc(size + 1);
	for (size_t i = 0; i < size; i++)
		wbuf[i] = (char)(i * 7);
	for (int i = 0; i < ndev; i++) {
		struct dev *d = &devs[i];
		d->fd = open(d->path, O_RDWR);
		if (d->fd < 0)
			die(d->path);
		ioctl(d->fd, LB_RESET);
		if (!strcmp(mode, "nbread") && (d->nfd = open(d->path, O_RDONLY | O_NONBLOCK)) < 0)
			die(d->path);
		if (!strcmp(mode, "peek")) {
			memset(wbuf, 'p', size);
			full_write(d->fd, wbuf, size);
		}
	}
	for (long r = 0; r < rounds; r++) {
		long n = total / rounds + (r < total % rounds);
		for (int i = 0; i < ndev; i++)
			slice(&devs[(r + i) % ndev], n);
	}
	for (int i = 0; i < ndev; i++) {
		struct dev *d = &devs[i];
		if (!strcmp(mode, "rw")) {
			printf("%s rw %zu %.1f MB/s\n", d->path, size, d->done / d->secs / 1e6);
		} else if (!strcmp(mode, "peek")) {
			printf("%s peek %zu %.0f ns/op\n", d->path, size, d->secs / d->done * 1e9);
		} else {
			printf("%s %s - %.0f ns/op\n", d->path, mode, d->secs / d->done * 1e9);
		}
	}
	return 0;
}
