/*
 * Benchmark client for CUSE loopback devices (fusegate's Go device and the
 * libfuse C device behave the same on these paths). Prints one line:
 *   <mode> <param> <value> <unit>
 *
 *   client DEV rw CHUNK MIB       write CHUNK bytes, read them back, until MIB
 *                                 MiB went each way: MB/s (one direction)
 *   client DEV nbread N           N nonblocking reads of the empty device
 *                                 (EAGAIN): ns per request round trip
 *   client DEV stat N             N IocStat ioctls (_IOR, one retry each): ns/op
 *   client DEV peek N SIZE        N IocPeek ioctls reading SIZE buffered bytes
 *                                 through an embedded pointer (two retries): ns/op
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

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s DEV rw CHUNK MIB | nbread N | stat N | peek N SIZE\n", argv[0]);
		return 2;
	}
	const char *mode = argv[2];
	long a = strtol(argv[3], NULL, 0);
	int fd = open(argv[1], O_RDWR);
	if (fd < 0)
		die(argv[1]);
	ioctl(fd, LB_RESET);

	if (!strcmp(mode, "rw")) {
		size_t chunk = a;
		long total = strtol(argv[4], NULL, 0) << 20;
		char *w = malloc(chunk), *r = malloc(chunk);
		for (size_t i = 0; i < chunk; i++)
			w[i] = (char)(i * 7);
		double t0 = now();
		long moved = 0;
		while (moved < total) {
			full_write(fd, w, chunk);
			full_read(fd, r, chunk);
			moved += chunk;
		}
		double dt = now() - t0;
		if (memcmp(w, r, chunk)) {
			fprintf(stderr, "data corrupted\n");
			return 1;
		}
		printf("rw %zu %.1f MB/s\n", chunk, moved / dt / 1e6);
	} else if (!strcmp(mode, "nbread")) {
		int nfd = open(argv[1], O_RDONLY | O_NONBLOCK);
		char b[16];
		double t0 = now();
		for (long i = 0; i < a; i++)
			if (read(nfd, b, sizeof b) != -1 || errno != EAGAIN)
				die("nonblocking read");
		printf("nbread - %.0f ns/op\n", (now() - t0) / a * 1e9);
	} else if (!strcmp(mode, "stat")) {
		struct lb_stat st;
		double t0 = now();
		for (long i = 0; i < a; i++)
			if (ioctl(fd, LB_STAT, &st) != 0)
				die("LB_STAT");
		printf("stat - %.0f ns/op\n", (now() - t0) / a * 1e9);
	} else if (!strcmp(mode, "peek")) {
		size_t size = strtoul(argv[4], NULL, 0);
		char *data = malloc(size), *dst = malloc(size);
		memset(data, 'p', size);
		full_write(fd, data, size);
		struct lb_peek p = { (uintptr_t)dst, (uint32_t)size, 0 };
		double t0 = now();
		for (long i = 0; i < a; i++)
			if (ioctl(fd, LB_PEEK, &p) != (int)size || p.copied != size)
				die("LB_PEEK");
		double dt = now() - t0;
		if (memcmp(data, dst, size)) {
			fprintf(stderr, "peek corrupted\n");
			return 1;
		}
		printf("peek %zu %.0f ns/op\n", size, dt / a * 1e9);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
