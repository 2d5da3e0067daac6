package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livemig/livemig/bench"
	"github.com/livemig/livemig/internal/testutil"
)

var (
	builtOnce sync.Once
	builtBin  string
	builtErr  error
)

// builtLivemig builds the livemig binary once per test run: bench drives livemig's
// public surface by executing itself, so the end-to-end tests run the real binary.
func builtLivemig(t *testing.T) string {
	t.Helper()
	builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "livemig-bin-")
		if err != nil {
			builtErr = err
			return
		}
		builtBin = filepath.Join(dir, "livemig")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			builtErr = errors.New(string(out))
		}
	})
	if builtErr != nil {
		t.Fatalf("go build: %v", builtErr)
	}
	return builtBin
}

// runBench runs `livemig bench downtime ARGS --json` and decodes the report.
func runBench(t *testing.T, args ...string) (*bench.Report, string) {
	t.Helper()
	var rep bench.Report
	stderr := runBenchJSON(t, "downtime", &rep, args...)
	return &rep, stderr
}

// runBenchJSON runs `livemig bench WHICH --json ARGS` through the built binary, decodes
// its stdout into out and returns its stderr.
func runBenchJSON(t *testing.T, which string, out any, args ...string) string {
	t.Helper()
	cmd := exec.Command(builtLivemig(t), append([]string{"bench", which, "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("livemig bench %s %s: %v\nstderr:\n%s", which, strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout.String())
	}
	return stderr.String()
}

func methodOf(t *testing.T, cr *bench.CaseResult, name string) *bench.MethodResult {
	t.Helper()
	for _, m := range cr.Methods {
		if m.Method == name {
			return m
		}
	}
	t.Fatalf("no method %q in the report", name)
	return nil
}

// checkSVG parses the file with encoding/xml: well-formed, <svg> root, a plot in it.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("SVG: %v", err)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	root, polylines := "", 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG %s is not valid XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "polyline" {
				polylines++
			}
		}
	}
	if root != "svg" || polylines == 0 {
		t.Errorf("SVG root %q with %d plot(s), want svg with at least one", root, polylines)
	}
}

// The smallest end-to-end run with the manual recipes: 1 process, 1 file, repeat 1.
func TestBenchDowntimeRecipes(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "gcc")
	testutil.RequireTool(t, "gdb")
	testutil.RequireTool(t, "rsync")
	testutil.RequireTool(t, "losetup")
	svg := filepath.Join(t.TempDir(), "downtime.svg")
	md := filepath.Join(t.TempDir(), "results.md")
	rep, _ := runBench(t, "--procs", "1", "--files", "1", "--repeat", "1", "--size", "1M",
		"--livemig", "none", "--peers", "gdb,rsync-remount", "--before", "300ms", "--after", "500ms",
		"--svg", svg, "--markdown", md)

	if rep.Benchmark != "downtime" || rep.Clock != "CLOCK_MONOTONIC" || rep.FS != "ext4" || rep.Repeat != 1 ||
		rep.Machine.Cores < 1 || rep.Date == "" || !strings.Contains(rep.Command, "bench downtime") || len(rep.Cases) != 1 {
		t.Fatalf("report header: %+v", rep)
	}
	cr := rep.Cases[0]
	if cr.Shape.Procs != 1 || cr.Shape.Files != 1 || len(cr.ControlNS) != 1 || cr.ControlGap.N != 1 || cr.ControlNS[0] <= 0 {
		t.Errorf("case: shape %+v, control %v %+v", cr.Shape, cr.ControlNS, cr.ControlGap)
	}

	gdb := methodOf(t, cr, bench.MethodGDB)
	if gdb.Skipped != "" || len(gdb.Runs) != 1 {
		t.Fatalf("gdb: skipped %q, %d run(s)", gdb.Skipped, len(gdb.Runs))
	}
	run := gdb.Runs[0]
	if run.Error != "" {
		t.Fatalf("gdb run failed: %s", run.Error)
	}
	// gdb stops the process for its whole session: far more than one line's period.
	if run.PauseNS < 2_000_000 || run.TotalNS < run.PauseNS || gdb.Pause.Median != run.PauseNS {
		t.Errorf("gdb: pause %d ns, total %d ns, stats %+v", run.PauseNS, run.TotalNS, gdb.Pause)
	}
	if !run.IntegrityOK || gdb.IntegrityOK != 1 || run.Integrity.AfterOnNew == 0 || run.Integrity.AfterOnOld != 0 {
		t.Errorf("gdb recipe moves the file: integrity %+v ok %v", run.Integrity, run.IntegrityOK)
	}
	if len(run.Processes) != 1 || run.Processes[0].Files != 1 || run.Processes[0].PauseNS != run.PauseNS ||
		run.Processes[0].Gap.To.NS-run.Processes[0].Gap.From.NS != run.PauseNS || run.Timeline == nil {
		t.Errorf("gdb process: %+v", run.Processes)
	}

	// Seed 001 leaves the open file on the old filesystem: what the lines show.
	rr := methodOf(t, cr, bench.MethodRsyncRemount)
	if rr.Skipped != "" || len(rr.Runs) != 1 || rr.Runs[0].Error != "" {
		t.Fatalf("rsync-remount: %+v", rr)
	}
	r1 := rr.Runs[0]
	if r1.IntegrityOK || r1.Integrity.AfterOnOld == 0 || r1.Integrity.MissingOnNew == 0 || r1.PauseNS <= 0 {
		t.Errorf("rsync-remount: integrity %+v ok %v pause %d; want the lines after the cutover on the old storage",
			r1.Integrity, r1.IntegrityOK, r1.PauseNS)
	}

	checkSVG(t, svg)
	page, err := os.ReadFile(md)
	if err != nil || !strings.Contains(string(page), "| 1 x 1 @1000/s | gdb |") || !strings.Contains(string(page), "livemig bench downtime") {
		t.Errorf("results page (%v):\n%s", err, page)
	}
}

// livemig's own cutover, driven through `livemig cutover --json` as a user would. Until
// the cutover command is in the binary, bench reports it as skipped: only that skips.
func TestBenchDowntimeLivemig(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "gcc")
	testutil.RequireTool(t, "losetup")
	svg := filepath.Join(t.TempDir(), "downtime.svg")
	rep, _ := runBench(t, "--procs", "1", "--files", "2", "--repeat", "1", "--size", "1M",
		"--livemig", "repoint,remount", "--peers", "none", "--before", "300ms", "--after", "500ms", "--svg", svg)
	cr := rep.Cases[0]
	for _, name := range []string{bench.MethodLivemig, bench.MethodLivemigRemount} {
		m := methodOf(t, cr, name)
		if m.Skipped != "" {
			t.Fatalf("%s skipped: %s", name, m.Skipped)
		}
		if len(m.Runs) != 1 || m.Runs[0].Error != "" {
			t.Fatalf("%s: %+v", name, m.Runs)
		}
		run := m.Runs[0]
		if run.Report == nil || run.Report.Result != "done" || run.Report.Clock != "CLOCK_MONOTONIC" || len(run.Report.Processes) != 1 {
			t.Errorf("%s: cutover report %+v", name, run.Report)
		}
		if !run.IntegrityOK {
			t.Errorf("%s: integrity %+v, processes %+v", name, run.Integrity, run.Processes)
		}
		p := run.Processes[0]
		// The freeze..resume window of the report lies inside the gap the writer saw.
		if p.Reported <= 0 || p.PauseNS <= 0 || p.Gap.From.NS > p.Window.From || p.Gap.To.NS < p.Window.To {
			t.Errorf("%s: process %+v: the writer's gap must span the reported freeze..resume", name, p)
		}
	}
	checkSVG(t, svg)
}

// Ctrl-C in the middle of a run: bench stops, and every mount and loop device it made
// is gone. TMPDIR points bench's storage into this test's own directory.
func TestBenchDowntimeInterruptCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "gcc")
	testutil.RequireTool(t, "losetup")
	tmp := t.TempDir()
	cmd := exec.Command(builtLivemig(t), "bench", "downtime", "--size", "1M", "--before", "20s", "--peers", "none", "--livemig", "repoint")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	testutil.Start(t, cmd)
	testutil.Eventually(t, 20*time.Second, "bench's storage mounted", func() bool { return len(mountsUnder(tmp)) >= 4 })
	time.Sleep(200 * time.Millisecond) // the workload starts
	interruptBench(t, cmd, &stderr, tmp)
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		if b, _ := os.ReadFile(l); strings.HasPrefix(string(b), tmp) {
			t.Errorf("%s still attached to %s", l, b)
		}
	}
}

// interruptBench sends SIGINT to a running bench and checks that it stops within 20 s,
// exits 1 saying so, and leaves nothing mounted or behind in tmp (its TMPDIR).
func interruptBench(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer, tmp string) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("bench did not stop within 20 s of SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != exitFailed || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("exit %d, stderr %q; want 1 saying it was interrupted", code, stderr.String())
	}
	if m := mountsUnder(tmp); len(m) > 0 {
		t.Errorf("left mounted: %v", m)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		t.Errorf("left in TMPDIR: %v", ents)
	}
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// Bad flags: exit 2 with one line, before anything is mounted or started.
func TestBenchBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "nosuch"},
		{"bench", "downtime", "--procs", "0"},
		{"bench", "downtime", "--threads", "3", "--files", "2"},
		{"bench", "downtime", "--fs", "btrfs"},
		{"bench", "downtime", "--size", "12Q"},
		{"bench", "downtime", "--peers", "lsyncd"},
		{"bench", "downtime", "--livemig", "none", "--peers", "none"},
		{"bench", "downtime", "--matrix", "1by1"},
		{"bench", "downtime", "--repeat", "0"},
		{"bench", "downtime", "--rate", "-5"},
		// bench sync has flags of its own
		{"bench", "sync", "extra"},
		{"bench", "sync", "--files", "0"},
		{"bench", "sync", "--dirs", "30", "--files", "20"},
		{"bench", "sync", "--big", "12Q"},
		{"bench", "sync", "--change", "4M", "--big", "4M"},
		{"bench", "sync", "--peers", "gdb"},
		{"bench", "sync", "--rows", "nosuch"},
		{"bench", "sync", "--repeat", "0"},
		{"bench", "sync", "--lag-rate", "0"},
		{"bench", "sync", "--lag-timeout", "1ms"},
		{"bench", "sync", "--fs", "btrfs"},
		{"bench", "sync", "--procs", "1"},
		{"bench", "downtime", "--files", "0"},
		{"bench", "downtime", "--lag-files", "1"},
	} {
		var stderr bytes.Buffer
		code := run(args, io.Discard, &stderr)
		if code != exitUsage || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, code, stderr.String())
		}
	}
}

func TestParseBytesAndCase(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "64K": 64 << 10, "32M": 32 << 20, "2g": 2 << 30, "1MiB": 1 << 20} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1T", "x"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q): no error", in)
		}
	}
	sh, err := parseCase("20x8@250", bench.Shape{Threads: 1, Rate: 1000})
	if err != nil || sh.Procs != 20 || sh.Files != 8 || sh.Rate != 250 || sh.Threads != 1 {
		t.Errorf("parseCase = %+v, %v", sh, err)
	}
	if sh, err := parseCase("1x64", bench.Shape{Rate: 1000, Threads: 1}); err != nil || sh.Rate != 1000 || sh.Files != 64 {
		t.Errorf("parseCase without rate = %+v, %v", sh, err)
	}
}
