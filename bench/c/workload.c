// The bench workload: a process that keeps files open under a directory and appends
// timestamped, numbered lines to them, the way a long-running job writes its logs.
//
//   workload write --files N [--threads T] [--rate R] [--prefix P]
//       cwd must be the directory (it stays the process's working directory).
//       Opens P000.log ... (O_WRONLY|O_APPEND|O_CREAT), prints "ready" on stdout, then
//       writes "<seq> <CLOCK_MONOTONIC ns>\n" to every file R times per second (one seq
//       counter per file, from 0), each line with one write(2), until killed. Files are
//       shared out among T threads (file i is written by thread i % T).
//
//   workload dirty --files N --rate BYTES_PER_S
//       cwd must be a directory holding fill000 ... (N files). Every 10 ms, opens one of
//       them at random, overwrites BYTES_PER_S/100 bytes at a random offset, and closes it:
//       background changes elsewhere in the tree. Prints "ready" then runs until killed.
//
// Exit status 2 on bad arguments, 1 on any failed system call (with a message on stderr).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *arg) {
	fprintf(stderr, "workload: %s %s: %s\n", what, arg, strerror(errno));
	exit(1);
}

static void sleep_until(long long t) {
	struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
	}
}

static int nfiles, nthreads = 1;
static long long period;
static int *fds;
static char (*names)[64];

struct part {
	int tid;
};

static void *writer(void *arg) {
	int tid = ((struct part *)arg)->tid;
	long long *seq = calloc(nfiles, sizeof *seq);
	char buf[64];
	long long next = now_ns();
	if (!seq) die("calloc", "seq");
	for (;;) {
		for (int i = tid; i < nfiles; i += nthreads) {
			int n = snprintf(buf, sizeof buf, "%lld %lld\n", seq[i], now_ns());
			ssize_t w = write(fds[i], buf, n);
			if (w != n) {
				if (w >= 0) errno = EIO;
				die("write", names[i]);
			}
			seq[i]++;
		}
		next += period;
		long long now = now_ns();
		if (next < now - period) next = now; // fell behind (stopped): no burst to catch up
		sleep_until(next);
	}
	return NULL;
}

static int do_write(const char *prefix, long long rate) {
	fds = calloc(nfiles, sizeof *fds);
	names = calloc(nfiles, sizeof *names);
	if (!fds || !names) die("calloc", "fds");
	for (int i = 0; i < nfiles; i++) {
		snprintf(names[i], sizeof names[i], "%s%03d.log", prefix, i);
		fds[i] = open(names[i], O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (fds[i] < 0) die("open", names[i]);
	}
	period = 1000000000LL / rate;
	printf("ready\n");
	fflush(stdout);
	struct part *parts = calloc(nthreads, sizeof *parts);
	pthread_t *th = calloc(nthreads, sizeof *th);
	if (!parts || !th) die("calloc", "threads");
	for (int t = 1; t < nthreads; t++) {
		parts[t].tid = t;
		errno = pthread_create(&th[t], NULL, writer, &parts[t]);
		if (errno) die("pthread_create", "writer");
	}
	writer(&parts[0]);
	return 0;
}

static int do_dirty(long long rate) {
	long long chunk = rate / 100;
	if (chunk < 1) chunk = 1;
	char *buf = malloc(chunk);
	if (!buf) die("malloc", "chunk");
	unsigned seed = (unsigned)now_ns();
	printf("ready\n");
	fflush(stdout);
	long long next = now_ns();
	for (;;) {
		char name[32];
		snprintf(name, sizeof name, "fill%03d", (int)(rand_r(&seed) % nfiles));
		int fd = open(name, O_WRONLY);
		if (fd < 0) die("open", name);
		struct stat st;
		if (fstat(fd, &st) < 0) die("fstat", name);
		off_t off = st.st_size > chunk ? (off_t)(rand_r(&seed) % (st.st_size - chunk)) : 0;
		for (long long i = 0; i < chunk; i++) buf[i] = (char)rand_r(&seed);
		if (pwrite(fd, buf, chunk, off) < 0) die("pwrite", name);
		close(fd);
		next += 10000000LL;
		long long now = now_ns();
		if (next < now) next = now;
		sleep_until(next);
	}
	return 0;
}

static void usage(void) {
	fprintf(stderr, "usage: workload write --files N [--threads T] [--rate R] [--prefix P]\n"
	                "       workload dirty --files N --rate BYTES_PER_S\n");
	exit(2);
}

int main(int argc, char **argv) {
	if (argc < 2) usage();
	const char *mode = argv[1], *prefix = "f";
	long long rate = 100;
	for (int i = 2; i < argc; i += 2) {
		if (i + 1 >= argc) usage();
		const char *k = argv[i], *v = argv[i + 1];
		if (!strcmp(k, "--files")) nfiles = atoi(v);
		else if (!strcmp(k, "--threads")) nthreads = atoi(v);
		else if (!strcmp(k, "--rate")) rate = atoll(v);
		else if (!strcmp(k, "--prefix")) prefix = v;
		else usage();
	}
	if (nfiles < 1 || nthreads < 1 || rate < 1 || rate > 1000000000LL) usage();
	if (nthreads > nfiles) nthreads = nfiles;
	if (!strcmp(mode, "write")) return do_write(prefix, rate);
	if (!strcmp(mode, "dirty")) return do_dirty(rate);
	usage();
	return 2;
}
