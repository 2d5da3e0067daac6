package cutover

// C programs the tests run as real processes: each holds a known set of things under the
// directory it is given, reports them on stdout ("name value" lines, then "ready") and
// waits.

// holderC holds one of every kind of item under argv[1], which becomes its cwd.
const holderC = `
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static void die(const char *what) { perror(what); exit(1); }

static int mk(const char *name, int flags, const char *content) {
	int fd = open(name, flags | O_CREAT, 0644);
	if (fd < 0) die(name);
	if (content && write(fd, content, strlen(content)) < 0) die("write");
	return fd;
}

static char *map(const char *name, int size, int prot, int flags) {
	int fd = open(name, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, size)) die(name);
	char *p = mmap(NULL, size, prot, flags, fd, 0);
	if (p == MAP_FAILED) die("mmap");
	close(fd);
	return p;
}

int main(int argc, char **argv) {
	if (chdir(argv[1])) die("chdir");
	printf("plain %d\n", mk("plain", O_WRONLY | O_TRUNC, "hello"));
	printf("append %d\n", mk("append", O_WRONLY | O_APPEND, "abc"));
	int rw = mk("rdwr", O_RDWR, "0123456789012345678901234567890123456789012345678901234567890");
	lseek(rw, 42, SEEK_SET);
	printf("rdwr %d\n", rw);
	close(mk("cloexec", O_WRONLY, "x"));
	printf("cloexec %d\n", open("cloexec", O_RDONLY | O_CLOEXEC));
	mkdir("subdir", 0755);
	printf("dir %d\n", open("subdir", O_RDONLY | O_DIRECTORY));
	int gone = mk("gone", O_RDWR, "0123456789");
	if (unlink("gone")) die("unlink");
	printf("deleted %d\n", gone);
	printf("fakedeleted %d\n", mk("real (deleted)", O_RDONLY, NULL));
	printf("oddname %d\n", mk("with space\nand newline", O_RDONLY, NULL));
	if (mkfifo("fifo", 0644)) die("mkfifo");
	printf("fifo %d\n", open("fifo", O_RDWR | O_NONBLOCK));
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s/sock", argv[1]);
	if (bind(s, (void *)&a, sizeof a) || listen(s, 1)) die("bind");
	printf("socket %d\n", s);
	char *sh = map("shared", 8192, PROT_READ | PROT_WRITE, MAP_SHARED);
	sh[0] = 'x';
	printf("shared-map %lx\n", (unsigned long)sh);
	char *pc = map("private", 8192, PROT_READ, MAP_PRIVATE);
	volatile char c = pc[0];
	(void)c;
	printf("private-map %lx\n", (unsigned long)pc);
	char *pd = map("privdirty", 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	pd[4096] = 'x';
	printf("private-dirty %lx\n", (unsigned long)pd);
	printf("oddname-map %lx\n", (unsigned long)map("map with space\nand newline", 4096, PROT_READ, MAP_SHARED));
	printf("ready\n");
	fflush(stdout);
	for (;;) pause();
}
`

// threadsC has threads with tables of their own: one unshares its fd table and opens
// argv[1]/thread-only, one unshares its fs_struct and chdirs to argv[1]/sub. The main
// thread keeps cwd "/" and opens argv[1]/shared.
const threadsC = `
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *dir;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int ready;

static void die(const char *what) { perror(what); exit(1); }

static void *own_files(void *arg) {
	char p[4096];
	if (unshare(CLONE_FILES)) die("unshare files");
	snprintf(p, sizeof p, "%s/thread-only", dir);
	int fd = open(p, O_RDWR | O_CREAT, 0644);
	if (fd < 0) die(p);
	pthread_mutex_lock(&mu);
	printf("files-tid %ld\nthread-only %d\n", (long)syscall(SYS_gettid), fd);
	ready++;
	pthread_mutex_unlock(&mu);
	for (;;) pause();
}

static void *own_fs(void *arg) {
	char p[4096];
	if (unshare(CLONE_FS)) die("unshare fs");
	snprintf(p, sizeof p, "%s/sub", dir);
	mkdir(p, 0755);
	if (chdir(p)) die(p);
	pthread_mutex_lock(&mu);
	printf("fs-tid %ld\n", (long)syscall(SYS_gettid));
	ready++;
	pthread_mutex_unlock(&mu);
	for (;;) pause();
}

int main(int argc, char **argv) {
	char p[4096];
	dir = argv[1];
	if (chdir("/")) die("chdir");
	snprintf(p, sizeof p, "%s/shared", dir);
	int fd = open(p, O_RDWR | O_CREAT, 0644);
	if (fd < 0) die(p);
	printf("shared %d\n", fd);
	pthread_t t1, t2;
	pthread_create(&t1, NULL, own_files, NULL);
	pthread_create(&t2, NULL, own_fs, NULL);
	for (;;) {
		pthread_mutex_lock(&mu);
		int n = ready;
		pthread_mutex_unlock(&mu);
		if (n == 2) break;
		usleep(1000);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) pause();
}
`

// tickerC appends a line to argv[1]/ticks every millisecond from each of argv[2]
// threads (default 1), with its cwd in argv[1]: progress that a test can watch.
const tickerC = `
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int fd;

static void *tick(void *arg) {
	for (;;) {
		if (write(fd, "t\n", 2) != 2) exit(1);
		usleep(1000);
	}
}

int main(int argc, char **argv) {
	if (chdir(argv[1])) { perror("chdir"); return 1; }
	fd = open("ticks", O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0) { perror("open"); return 1; }
	int n = argc > 2 ? atoi(argv[2]) : 1;
	for (int i = 1; i < n; i++) {
		pthread_t t;
		pthread_create(&t, NULL, tick, NULL);
	}
	printf("ready\n");
	fflush(stdout);
	tick(NULL);
}
`

// forkerC, with its cwd in argv[1], forks a child every 2 ms; each child lives 200 ms.
// Children are born all the time, so some are born while the parent is being frozen.
const forkerC = `
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (chdir(argv[1])) { perror("chdir"); return 1; }
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		pid_t pid = fork();
		if (pid == 0) {
			usleep(200000);
			_exit(0);
		}
		while (waitpid(-1, NULL, WNOHANG) > 0) {
		}
		usleep(2000);
	}
}
`

// vforkC vforks a child that never execs: the parent waits for it uninterruptibly
// (state D) and cannot reach a group stop. It reports both pids.
const vforkC = `
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("parent %d\n", getpid());
	fflush(stdout);
	pid_t pid = vfork();
	if (pid == 0) {
		char line[64];
		int n = snprintf(line, sizeof line, "child %d\nready\n", getpid());
		write(1, line, n);
		for (;;) pause();
	}
	for (;;) pause();
}
`
