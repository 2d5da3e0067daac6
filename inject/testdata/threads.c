// argv[1]: file opened on fd 3. 8 busy threads count; the main thread writes all counts
// to fd 3 every 5 ms, so a swap of fd 3 and the life of every thread show in the files.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 8
static volatile unsigned long counts[N];

static void *spin(void *arg) {
	volatile unsigned long *c = arg;
	for (;;)
		(*c)++;
	return NULL;
}

int main(int argc, char **argv) {
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd != 3) dup2(fd, 3);
	pthread_t th[N];
	for (int i = 0; i < N; i++)
		pthread_create(&th[i], NULL, spin, (void *)&counts[i]);
	printf("ready\n");
	fflush(stdout);
	struct timespec ts = {0, 5000000};
	for (;;) {
		char line[512];
		int n = 0;
		for (int i = 0; i < N; i++)
			n += snprintf(line + n, sizeof line - n, "%lu%c", counts[i], i == N - 1 ? '\n' : ' ');
		if (write(3, line, n) != n) return 1;
		nanosleep(&ts, NULL);
	}
}
