// Creates short-lived threads without pause, so that threads appear while we attach.
#include <pthread.h>
#include <stdio.h>
#include <time.h>

static void *brief(void *arg) {
	(void)arg;
	struct timespec ts = {0, 200000};
	nanosleep(&ts, NULL);
	return NULL;
}

int main(void) {
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		pthread_t th;
		if (pthread_create(&th, NULL, brief, NULL) == 0)
			pthread_detach(th);
	}
}
