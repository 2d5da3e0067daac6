package inject

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/internal/testutil"
)

// The figures of issue 2: the median cost of one injected syscall (with gdb's `call` on
// the same target in the same run, for the ratio), attach+detach of a 1- and a 64-thread
// process, and one swap. Run: go test -run '^$' -bench . ./inject/

func BenchmarkSyscall(b *testing.B) {
	testutil.RequireRoot(b)
	c := startChild(b, nil, buildTestdata(b, "sleepers"), "1")
	c.expect(b, "ready")
	p := attach(b, c.pid)
	getpid := func() time.Duration {
		start := time.Now()
		if _, err := p.Syscall(unix.SYS_GETPID); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	// Back to back on the tracer thread, as a cutover makes them.
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	err := p.Do(func() error {
		for i := 0; i < b.N; i++ {
			times = append(times, getpid())
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	injected := median(times)
	b.ReportMetric(float64(injected.Nanoseconds()), "median-ns/syscall")
	// One lone call from another goroutine: the same plus a handoff to the tracer thread.
	var lone []time.Duration
	for i := 0; i < 1000; i++ {
		lone = append(lone, getpid())
	}
	b.ReportMetric(float64(median(lone).Nanoseconds()), "median-ns/lone-syscall")
	detach(b, p)

	if b.N < 100 { // the calibration run: gdb is measured once, in the real run
		return
	}
	if _, err := exec.LookPath("gdb"); err != nil {
		b.Logf("gdb not installed: no ratio")
		return
	}
	var gdbTimes []time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		out, err := exec.Command("gdb", "-batch", "-nx", "-p", fmt.Sprint(c.pid), "-ex", "call (int)getpid()").CombinedOutput()
		if err != nil || !strings.Contains(string(out), fmt.Sprint(c.pid)) {
			b.Fatalf("gdb call getpid: %v\n%s", err, out)
		}
		gdbTimes = append(gdbTimes, time.Since(start))
	}
	gdb := median(gdbTimes)
	b.ReportMetric(float64(gdb.Microseconds()), "gdb-median-µs/call")
	b.ReportMetric(float64(gdb)/float64(injected), "gdb/injected")
	b.Logf("one getpid: injected %v (median of %d; %v as a lone call), gdb -batch -p %v (median of %d): %.0fx faster",
		injected, len(times), median(lone), gdb, len(gdbTimes), float64(gdb)/float64(injected))
}

func BenchmarkAttachDetach(b *testing.B) {
	testutil.RequireRoot(b)
	for _, threads := range []int{1, 64} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			c := startChild(b, nil, buildTestdata(b, "sleepers"), fmt.Sprint(threads))
			c.expect(b, "ready")
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				p, err := Attach(c.pid)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Threads()) != threads {
					b.Fatalf("attached %d threads, want %d", len(p.Threads()), threads)
				}
				if err := p.Detach(); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
			}
			b.ReportMetric(float64(median(times).Microseconds()), "median-µs/attach+detach")
		})
	}
}

func BenchmarkSwap(b *testing.B) {
	testutil.RequireRoot(b)
	dir := testutil.MountTmpfs(b)
	paths := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b")}
	for _, path := range paths {
		if err := os.WriteFile(path, make([]byte, 20000), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	c := startChild(b, nil, buildTestdata(b, "fdkinds"), paths[0], paths[0], paths[0])
	var fds [3]int
	fmt.Sscanf(c.expect(b, "fds "), "fds %d %d %d", &fds[0], &fds[1], &fds[2])
	p := attach(b, c.pid)
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	err := p.Do(func() error {
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := p.Swap(fds[1], paths[i%2]); err != nil {
				return err
			}
			times = append(times, time.Since(start))
		}
		return nil
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(median(times).Microseconds()), "median-µs/swap")
	detach(b, p)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
