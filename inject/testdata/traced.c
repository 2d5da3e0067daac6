// Forks a child and holds it with PTRACE_SEIZE, as a debugger would; prints the child's pid.
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pid_t child = fork();
	if (child == 0)
		for (;;) pause();
	if (ptrace(PTRACE_SEIZE, child, 0, 0) != 0) { perror("seize"); return 1; }
	printf("child %d\n", child);
	for (;;) pause();
}
