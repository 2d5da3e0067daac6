// Busy loop that prints consecutive numbers: any lost or repeated work shows as a gap.
#include <stdio.h>
int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	volatile unsigned long i = 0;
	unsigned long k = 0;
	for (;;)
		if (++i % 200000 == 0)
			printf("%lu\n", k++);
}
