package testutil

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ThreadStates returns the state letter ('R', 'S', 'T', ...) of every thread of pid, by
// tid, as /proc/PID/task/TID/stat shows it. A process that is gone has none.
func ThreadStates(pid int) map[int]string {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[int]string{}
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			out[tid] = s[i+2 : i+3]
		}
	}
	return out
}

// AllStopped reports whether pid exists and every thread of it is stopped ('T' or 't').
func AllStopped(pid int) bool {
	states := ThreadStates(pid)
	for _, s := range states {
		if s != "T" && s != "t" {
			return false
		}
	}
	return len(states) > 0
}

// NoneStopped reports whether no thread of pid is stopped (also true once pid is gone).
func NoneStopped(pid int) bool {
	for _, s := range ThreadStates(pid) {
		if s == "T" || s == "t" {
			return false
		}
	}
	return true
}

// ContinueAtCleanup sends SIGCONT to pid when the test ends, so that a failing test
// never leaves a process stopped. Register it after Start: cleanups run last-first.
func ContinueAtCleanup(t testing.TB, pid int) {
	t.Helper()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
}

// FileSize is the size of path, or -1 if it cannot be stat'ed.
func FileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// ReadLines reads lines from r until one equals stop, or timeout passes; it returns the
// lines before stop. It is how tests wait for a child's "ready" report.
func ReadLines(t testing.TB, r *bufio.Reader, stop string, timeout time.Duration) []string {
	t.Helper()
	type result struct {
		lines []string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var lines []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				done <- result{lines, err}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			if line == stop {
				done <- result{lines, nil}
				return
			}
			lines = append(lines, line)
		}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("waiting for %q: %v (read %q)", stop, res.err, res.lines)
		}
		return res.lines
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %q", timeout, stop)
		return nil
	}
}
