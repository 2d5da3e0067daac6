// Opens argv[1] O_WRONLY|O_APPEND, argv[2] O_RDWR at offset 12345, argv[3] O_WRONLY|O_CLOEXEC
// and prints their fd numbers. Each "w" line on stdin writes one line to each, then "done".
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	(void)argc;
	setvbuf(stdout, NULL, _IOLBF, 0);
	int a = open(argv[1], O_WRONLY | O_APPEND);
	int b = open(argv[2], O_RDWR);
	int c = open(argv[3], O_WRONLY | O_CLOEXEC);
	if (a < 0 || b < 0 || c < 0) { printf("ERR open\n"); return 1; }
	lseek(b, 12345, SEEK_SET);
	printf("fds %d %d %d\n", a, b, c);
	char cmd[64];
	while (fgets(cmd, sizeof cmd, stdin)) {
		if (write(a, "A\n", 2) != 2 || write(b, "B\n", 2) != 2 || write(c, "C\n", 2) != 2) {
			printf("ERR write\n");
			return 1;
		}
		printf("done\n");
	}
	return 0;
}
