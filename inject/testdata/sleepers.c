// Starts argv[1]-1 extra threads; every thread then waits in pause(), like an idle server.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *idle(void *arg) {
	(void)arg;
	for (;;) pause();
	return NULL;
}

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 1;
	for (int i = 1; i < n; i++) {
		pthread_t th;
		pthread_create(&th, NULL, idle, NULL);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) pause();
}
