// Forks a busy child and reports every state change of it that a parent can observe
// (waitpid with WUNTRACED|WCONTINUED): attaching must cause none.
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pid_t child = fork();
	if (child == 0) {
		volatile unsigned long i = 0;
		for (;;) i++;
	}
	printf("child %d\n", child);
	for (;;) {
		int st;
		if (waitpid(child, &st, WUNTRACED | WCONTINUED) == child)
			printf("changed %#x\n", st);
	}
}
