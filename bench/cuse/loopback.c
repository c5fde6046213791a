/*
 * The loopback device of cuse/loopback, written against libfuse3's
 * cuse_lowlevel API: the C side of fusegate's CUSE benchmark
 * (docs/benchmarks/cuse.md). Same device name scheme, same ring buffer,
 * same ioctl numbers and argument layouts (IocStat, IocPeek with an
 * embedded pointer served by the unrestricted-ioctl retry protocol,
 * FIONREAD, IocReset), poll with wake-ups.
 *
 * One difference, outside what the benchmark measures: a blocking read of
 * an empty device (or write into a full one) answers EAGAIN here instead
 * of waiting; the benchmark never blocks.
 *
 * Usage: cuse-loop-c --name=NAME [--capacity=BYTES] [libfuse options: -f -s -d]
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <cuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#define LB_STAT  _IOR(0xC5, 1, struct lb_stat)
#define LB_PEEK  _IOWR(0xC5, 2, struct lb_peek)
#define LB_RESET _IO(0xC5, 3)
#define IOCTL_MAX_BYTES (32 * 4096)

struct lb_stat { uint64_t used, capacity; };
struct lb_peek { uint64_t buf; uint32_t len, copied; };

static struct {
	pthread_mutex_t mu;
	unsigned char *buf;
	size_t cap, head, used;
	struct fuse_pollhandle *ph; /* the latest poller waiting, if any */
} lb = { .mu = PTHREAD_MUTEX_INITIALIZER };

/* ring_iov describes up to n buffered bytes from the head as two iovecs. */
static int ring_iov(struct iovec *iov, size_t n)
{
	size_t first = lb.cap - lb.head;
	if (first > n)
		first = n;
	iov[0].iov_base = lb.buf + lb.head;
	iov[0].iov_len = first;
	iov[1].iov_base = lb.buf;
	iov[1].iov_len = n - first;
	return n - first ? 2 : 1;
}

/* wake tells a waiting poller to poll again; lb.mu held. */
static void wake_locked(void)
{
	if (lb.ph) {
		fuse_lowlevel_notify_poll(lb.ph);
		fuse_pollhandle_destroy(lb.ph);
		lb.ph = NULL;
	}
}

static void lb_open(fuse_req_t req, struct fuse_file_info *fi)
{
	fuse_reply_open(req, fi);
}

static void lb_read(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct iovec iov[2];
	(void)off;
	(void)fi;
	pthread_mutex_lock(&lb.mu);
	size_t n = size < lb.used ? size : lb.used;
	if (n == 0) {
		pthread_mutex_unlock(&lb.mu);
		if (off > 0) /* a later chunk of one read(2): end it */
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_err(req, EAGAIN);
		return;
	}
	/* Reply straight from the ring, then advance: the reply is written
	 * before the lock is dropped, so nobody overwrites those bytes. */
	int cnt = ring_iov(iov, n);
	fuse_reply_iov(req, iov, cnt);
	lb.head = (lb.head + n) % lb.cap;
	lb.used -= n;
	if (lb.used == 0)
		lb.head = 0;
	wake_locked();
	pthread_mutex_unlock(&lb.mu);
}

static void lb_write(fuse_req_t req, const char *data, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)off;
	(void)fi;
	pthread_mutex_lock(&lb.mu);
	size_t room = lb.cap - lb.used;
	size_t n = size < room ? size : room;
	size_t tail = (lb.head + lb.used) % lb.cap;
	size_t first = lb.cap - tail < n ? lb.cap - tail : n;
	memcpy(lb.buf + tail, data, first);
	memcpy(lb.buf, data + first, n - first);
	lb.used += n;
	if (n)
		wake_locked();
	pthread_mutex_unlock(&lb.mu);
	if (n == 0 && size > 0)
		fuse_reply_err(req, EAGAIN);
	else
		fuse_reply_write(req, n);
}

static void lb_release(fuse_req_t req, struct fuse_file_info *fi)
{
	(void)fi;
	fuse_reply_err(req, 0);
}

static void lb_poll(fuse_req_t req, struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
	unsigned ev = 0;
	(void)fi;
	pthread_mutex_lock(&lb.mu);
	if (ph) {
		if (lb.ph)
			fuse_pollhandle_destroy(lb.ph);
		lb.ph = ph;
	}
	if (lb.used)
		ev |= POLLIN | POLLRDNORM;
	if (lb.used < lb.cap)
		ev |= POLLOUT | POLLWRNORM;
	pthread_mutex_unlock(&lb.mu);
	fuse_reply_poll(req, ev);
}

static void lb_ioctl(fuse_req_t req, int cmd, void *arg, struct fuse_file_info *fi,
		     unsigned flags, const void *in, size_t in_size, size_t out_size)
{
	(void)fi;
	if (!(flags & FUSE_IOCTL_UNRESTRICTED)) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	struct iovec argv = { arg, 0 };
	switch ((unsigned)cmd) {
	case LB_STAT: {
		argv.iov_len = sizeof(struct lb_stat);
		if (out_size < argv.iov_len) {
			fuse_reply_ioctl_retry(req, NULL, 0, &argv, 1);
			return;
		}
		pthread_mutex_lock(&lb.mu);
		struct lb_stat st = { lb.used, lb.cap };
		pthread_mutex_unlock(&lb.mu);
		fuse_reply_ioctl(req, 0, &st, sizeof st);
		return;
	}
	case 0x541B: { /* FIONREAD */
		argv.iov_len = sizeof(int);
		if (out_size < argv.iov_len) {
			fuse_reply_ioctl_retry(req, NULL, 0, &argv, 1);
			return;
		}
		pthread_mutex_lock(&lb.mu);
		int n = (int)lb.used;
		pthread_mutex_unlock(&lb.mu);
		fuse_reply_ioctl(req, 0, &n, sizeof n);
		return;
	}
	case LB_PEEK: {
		argv.iov_len = sizeof(struct lb_peek);
		if (in_size < argv.iov_len) {
			fuse_reply_ioctl_retry(req, &argv, 1, &argv, 1);
			return;
		}
		struct lb_peek p;
		memcpy(&p, in, sizeof p);
		size_t want = p.len;
		if (want > IOCTL_MAX_BYTES - sizeof p)
			want = IOCTL_MAX_BYTES - sizeof p;
		struct iovec outv[2] = { argv, { (void *)(uintptr_t)p.buf, want } };
		if (out_size < sizeof p + want) {
			fuse_reply_ioctl_retry(req, &argv, 1, outv, 2);
			return;
		}
		struct iovec rep[3];
		pthread_mutex_lock(&lb.mu);
		size_t n = want < lb.used ? want : lb.used;
		p.copied = (uint32_t)n;
		rep[0].iov_base = &p;
		rep[0].iov_len = sizeof p;
		int cnt = n ? ring_iov(rep + 1, n) : 0;
		fuse_reply_ioctl_iov(req, (int)n, rep, 1 + cnt);
		pthread_mutex_unlock(&lb.mu);
		return;
	}
	case LB_RESET: {
		pthread_mutex_lock(&lb.mu);
		int n = (int)lb.used;
		lb.head = lb.used = 0;
		wake_locked();
		pthread_mutex_unlock(&lb.mu);
		fuse_reply_ioctl(req, n, NULL, 0);
		return;
	}
	}
	fuse_reply_err(req, ENOTTY);
}

static const struct cuse_lowlevel_ops ops = {
	.open = lb_open,
	.read = lb_read,
	.write = lb_write,
	.release = lb_release,
	.ioctl = lb_ioctl,
	.poll = lb_poll,
};

int main(int argc, char **argv)
{
	const char *name = NULL;
	size_t cap = 64 * 1024;
	char *rest[argc + 1];
	int nrest = 0;
	for (int i = 0; i < argc; i++) {
		if (!strncmp(argv[i], "--name=", 7))
			name = argv[i] + 7;
		else if (!strncmp(argv[i], "--capacity=", 11))
			cap = strtoul(argv[i] + 11, NULL, 0);
		else
			rest[nrest++] = argv[i];
	}
	rest[nrest] = NULL;
	if (!name || !cap) {
		fprintf(stderr, "usage: %s --name=NAME [--capacity=BYTES] [-f] [-s] [-d]\n", argv[0]);
		return 2;
	}
	lb.buf = malloc(cap);
	lb.cap = cap;
	char devname[256];
	snprintf(devname, sizeof devname, "DEVNAME=%s", name);
	const char *info[] = { devname };
	struct cuse_info ci = {
		.dev_info_argc = 1,
		.dev_info_argv = info,
		.flags = CUSE_UNRESTRICTED_IOCTL,
	};
	return cuse_lowlevel_main(nrest, rest, &ci, &ops, NULL);
}
