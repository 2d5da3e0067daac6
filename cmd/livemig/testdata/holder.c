// Holds one kind of tie to a directory, for the cutover tests. argv[1] is the mode:
//   fifo FIFO DIR   cwd in DIR, blocked reading FIFO; each line read is appended to
//                   DIR-relative "fromfifo" (via the cwd)
//   locks FILE      flock(LOCK_SH) and a POSIX write lock on bytes 0..99 of FILE
//   deleted FILE    FILE holds "hello world", fd at offset 6, FILE unlinked; on each
//                   stdin line prints "read <5 bytes> pos <offset after>"
//   mmap FILE       FILE mapped shared (4096 bytes); on each stdin line writes "MAPPED"
//                   at its start through the mapping and prints "done"
// Prints "ready" once set up.
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *mode = argv[1];
	char line[256];
	if (!strcmp(mode, "fifo")) {
		if (chdir(argv[3])) { perror("chdir"); return 1; }
		printf("ready\n");
		FILE *f = fopen(argv[2], "r"); // blocks until the test opens the writing end
		if (!f) { perror("fifo"); return 1; }
		while (fgets(line, sizeof line, f)) {
			FILE *o = fopen("fromfifo", "a");
			if (!o) { perror("fromfifo"); return 1; }
			fputs(line, o);
			fclose(o);
		}
		return 0;
	}
	int fd = open(argv[2], O_RDWR);
	if (fd < 0) { perror("open"); return 1; }
	if (!strcmp(mode, "locks")) {
		struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
		if (flock(fd, LOCK_SH) || fcntl(fd, F_SETLK, &lk)) { perror("lock"); return 1; }
		printf("ready\n");
		for (;;) pause();
	}
	if (!strcmp(mode, "deleted")) {
		if (write(fd, "hello world", 11) != 11 || lseek(fd, 6, SEEK_SET) != 6 || unlink(argv[2])) { perror("deleted"); return 1; }
		printf("ready\n");
		while (fgets(line, sizeof line, stdin)) {
			char buf[6] = {0};
			ssize_t n = read(fd, buf, 5);
			printf("read %.*s pos %ld\n", (int)(n > 0 ? n : 0), buf, (long)lseek(fd, 0, SEEK_CUR));
		}
		return 0;
	}
	if (!strcmp(mode, "mmap")) {
		if (ftruncate(fd, 4096)) { perror("ftruncate"); return 1; }
		char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) { perror("mmap"); return 1; }
		close(fd);
		printf("ready\n");
		while (fgets(line, sizeof line, stdin)) {
			memcpy(p, "MAPPED", 6);
			msync(p, 4096, MS_SYNC);
			printf("done\n");
		}
		return 0;
	}
	fprintf(stderr, "unknown mode %s\n", mode);
	return 2;
}
