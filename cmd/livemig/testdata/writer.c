// A writer with one file of each kind open under argv[1], its cwd there too:
//   plain (O_WRONLY), append (O_APPEND), rdwr (O_RDWR, writing from offset 12345),
//   cloexec (O_CLOEXEC), a directory fd, and cwdfile, opened by relative path each time.
// Every 2 ms line N goes to each file. Prints "ready" with its fd numbers once started.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2 || chdir(argv[1]) != 0) { perror("chdir"); return 1; }
	int plain = open("plain", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int app = open("append", O_WRONLY | O_APPEND | O_CREAT, 0644);
	int rdwr = open("rdwr", O_RDWR | O_CREAT, 0644);
	int cloexec = open("cloexec", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int dir = open(".", O_RDONLY | O_DIRECTORY);
	if (plain < 0 || app < 0 || rdwr < 0 || cloexec < 0 || dir < 0) { perror("open"); return 1; }
	lseek(rdwr, 12345, SEEK_SET);
	printf("ready %d %d %d %d %d\n", plain, app, rdwr, cloexec, dir);
	fflush(stdout);
	struct timespec ts = {0, 2000000};
	for (unsigned long n = 0;; n++) {
		char line[32];
		int len = snprintf(line, sizeof line, "%lu\n", n);
		int fds[] = {plain, app, rdwr, cloexec};
		for (int i = 0; i < 4; i++)
			if (write(fds[i], line, len) != len) { perror("write"); return 1; }
		int c = open("cwdfile", O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (c < 0 || write(c, line, len) != len) { perror("cwdfile"); return 1; }
		close(c);
		nanosleep(&ts, NULL);
	}
}
