// A writer that dirties many small files fast: in argv[1] (its cwd), it rewrites files
// f0..f3999 in turn, one every 300 us, for ever. Prints "ready" once started. Used to
// outrun a deliberately slowed mirror.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2 || chdir(argv[1]) != 0) { perror("chdir"); return 1; }
	printf("ready\n");
	fflush(stdout);
	struct timespec ts = {0, 300000};
	char line[64];
	memset(line, 'x', sizeof line);
	for (unsigned long n = 0;; n++) {
		char name[32];
		snprintf(name, sizeof name, "f%lu", n % 4000);
		int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, line, sizeof line) != sizeof line) { perror(name); return 1; }
		close(fd);
		nanosleep(&ts, NULL);
	}
}
