package inject

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
)

// buildTestdata compiles testdata/NAME.c once per test binary.
func buildTestdata(t testing.TB, name string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	return testutil.BuildC(t, string(src), "-pthread")
}

var (
	goWriterOnce sync.Once
	goWriterBin  string
	goWriterErr  error
)

// buildGoWriter builds testdata/gowriter once per test binary.
func buildGoWriter(t testing.TB) string {
	t.Helper()
	goWriterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "livemig-gowriter-")
		if err != nil {
			goWriterErr = err
			return
		}
		goWriterBin = filepath.Join(dir, "gowriter")
		out, err := exec.Command("go", "build", "-o", goWriterBin, "./testdata/gowriter").CombinedOutput()
		if err != nil {
			goWriterErr = fmt.Errorf("go build gowriter: %v\n%s", err, out)
		}
	})
	if goWriterErr != nil {
		t.Fatal(goWriterErr)
	}
	return goWriterBin
}

// child is a test program with its stdin and stdout on pipes; its output lines arrive on
// lines, and it is killed at cleanup.
type child struct {
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	lines chan string
}

func startChild(t testing.TB, env []string, bin string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, cmd)
}

func startCmd(t testing.TB, cmd *exec.Cmd) *child {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	testutil.Start(t, cmd)
	c := &child{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, lines: make(chan string, 1<<16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	return c
}

// expect waits for the next output line and fails unless it starts with prefix.
func (c *child) expect(t testing.TB, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("pid %d: output ended, wanted %q", c.pid, prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("pid %d: got %q, wanted a line starting with %q", c.pid, l, prefix)
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d: no output within 10s, wanted %q", c.pid, prefix)
	}
	return ""
}

// noLine fails if the child prints anything within d.
func (c *child) noLine(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case l := <-c.lines:
		t.Fatalf("pid %d: unexpected output %q", c.pid, l)
	case <-time.After(d):
	}
}

func (c *child) send(t testing.TB, line string) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		t.Fatalf("write to pid %d: %v", c.pid, err)
	}
}

// attach attaches to pid and detaches at cleanup if the test has not.
func attach(t testing.TB, pid int) *Process {
	t.Helper()
	p, err := Attach(pid)
	if err != nil {
		t.Fatalf("Attach(%d): %v", pid, err)
	}
	t.Cleanup(func() { _ = p.Detach() })
	return p
}

func detach(t testing.TB, p *Process) {
	t.Helper()
	if err := p.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
}

// stateOf is a thread's state letter as the kernel shows it.
func stateOf(t testing.TB, tid int) byte {
	t.Helper()
	return threadState(tid)
}

// waitState waits until the thread's state letter is one of states.
func waitState(t testing.TB, tid int, states string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("thread %d in state %q (now %c)", tid, states, stateOf(t, tid)), func() bool {
		return strings.IndexByte(states, stateOf(t, tid)) >= 0
	})
}

// fdInfo is what /proc/PID/fdinfo/N and /proc/PID/fd/N show of one fd.
type fdInfo struct {
	target string
	pos    int64
	flags  int64 // octal in fdinfo; includes O_CLOEXEC when FD_CLOEXEC is set
}

func readFdInfo(t testing.TB, pid, fd int) fdInfo {
	t.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	info := fdInfo{target: target}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			info.pos, _ = strconv.ParseInt(v, 10, 64)
		case "flags":
			info.flags, _ = strconv.ParseInt(v, 8, 64)
		}
	}
	return info
}

func countFds(t testing.TB, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// readLines returns the complete lines of a file (a last line still being written is left out).
func readLines(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	return lines[:len(lines)-1]
}

func parseCounts(t testing.TB, line string) []uint64 {
	t.Helper()
	var counts []uint64
	for _, f := range strings.Fields(line) {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("malformed line %q", line)
		}
		counts = append(counts, n)
	}
	return counts
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func assertFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		if len(got) > 64 || len(want) > 64 {
			t.Errorf("%s: %d bytes, not the %d expected (or different content)", path, len(got), len(want))
		} else {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
}

// numGoroutinesSettled waits briefly for exiting goroutines to finish and returns the count;
// with a target, it returns as soon as the count is at most the target.
func numGoroutinesSettled(target int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 100 && (target == 0 || n > target); i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}
