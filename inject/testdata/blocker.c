// Blocks in one syscall (argv[1]: read, nanosleep, futex, accept, epoll), says "ready"
// first and, once unblocked, "ok ..." or "ERR <call> <errno text>". A SIGUSR1 handler
// (SA_RESTART) counts deliveries, reported as usr1=N.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { (void)sig; usr1++; }

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int woken;

static void *waker(void *arg) {
	(void)arg;
	char buf[64];
	if (read(0, buf, sizeof buf) <= 0) {
		printf("ERR waker read %s\n", strerror(errno));
		exit(1);
	}
	pthread_mutex_lock(&mu);
	woken = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
	return NULL;
}

static double now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
	sigaction(SIGUSR1, &sa, NULL);
	const char *mode = argc > 1 ? argv[1] : "read";
	char buf[256];

	if (!strcmp(mode, "read")) {
		printf("ready\n");
		ssize_t n = read(0, buf, sizeof buf - 1);
		if (n < 0) { printf("ERR read %s\n", strerror(errno)); return 1; }
		buf[n] = 0;
		buf[strcspn(buf, "\n")] = 0;
		printf("ok got %s usr1=%d\n", buf, (int)usr1);
	} else if (!strcmp(mode, "nanosleep")) {
		int ms = argc > 2 ? atoi(argv[2]) : 300;
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		double t0 = now_ms();
		printf("ready\n");
		if (nanosleep(&ts, NULL) < 0) { printf("ERR nanosleep %s\n", strerror(errno)); return 1; }
		printf("ok slept %.0f\n", now_ms() - t0);
	} else if (!strcmp(mode, "futex")) {
		pthread_t th;
		pthread_create(&th, NULL, waker, NULL);
		pthread_mutex_lock(&mu);
		printf("ready\n");
		while (!woken) {
			int rc = pthread_cond_wait(&cv, &mu);
			if (rc) { printf("ERR cond_wait %s\n", strerror(rc)); return 1; }
		}
		pthread_mutex_unlock(&mu);
		printf("ok woken\n");
	} else if (!strcmp(mode, "accept")) {
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		strncpy(a.sun_path, argv[2], sizeof a.sun_path - 1);
		if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) {
			printf("ERR bind %s\n", strerror(errno));
			return 1;
		}
		printf("ready\n");
		int c = accept(s, NULL, NULL);
		if (c < 0) { printf("ERR accept %s\n", strerror(errno)); return 1; }
		printf("ok accepted\n");
	} else if (!strcmp(mode, "epoll")) {
		int ep = epoll_create1(0);
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0}, out;
		epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
		printf("ready\n");
		int n = epoll_wait(ep, &out, 1, -1);
		if (n < 0) { printf("ERR epoll_wait %s\n", strerror(errno)); return 1; }
		printf("ok events %d\n", n);
	} else {
		printf("ERR unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
