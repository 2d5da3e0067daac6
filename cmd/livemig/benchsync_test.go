package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/livemig/livemig/bench"
	"github.com/livemig/livemig/internal/testutil"
)

// runBenchSync runs `livemig bench sync --json ARGS` through the built binary.
func runBenchSync(t *testing.T, args ...string) *bench.SyncReport {
	t.Helper()
	var rep bench.SyncReport
	runBenchJSON(t, "sync", &rep, args...)
	return &rep
}

func syncResult(t *testing.T, rep *bench.SyncReport, row, tool string) *bench.SyncResult {
	t.Helper()
	for _, r := range rep.Rows {
		if r.Key != row {
			continue
		}
		for _, res := range r.Results {
			if res.Tool == tool {
				return res
			}
		}
	}
	t.Fatalf("no %q in row %q", tool, row)
	return nil
}

// Every row at a tiny size, repeat 1, with the peers that finish quickly; the results
// page keeps the downtime section it already had.
func TestBenchSyncTiny(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "rsync")
	_, lsyncdErr := exec.LookPath("lsyncd")
	dir := t.TempDir()
	svg, md := filepath.Join(dir, "sync.svg"), filepath.Join(dir, "results.md")
	if err := os.WriteFile(md, []byte("# livemig bench downtime\n\n| the downtime table |\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := runBenchSync(t, "--files", "200", "--dirs", "4", "--big", "4M", "--lag-big", "1M", "--lag-files", "20",
		"--appends", "3", "--burst", "30", "--repeat", "1", "--peers", "cp,rsync,rsync-inplace,lsyncd-delay0",
		"--svg", svg, "--markdown", md)

	if rep.Benchmark != "sync" || rep.FS != "tmpfs" || rep.Repeat != 1 || rep.Machine.Cores < 1 || rep.Date == "" ||
		!strings.Contains(rep.Command, "bench sync") || rep.Sizes.Files != 200 || rep.Sizes.BigSize != 4<<20 || rep.LagTimeoutNS <= 0 {
		t.Fatalf("report header: %+v", rep)
	}
	var keys []string
	for _, r := range rep.Rows {
		keys = append(keys, r.Key)
		if r.Work == "" || r.Target == "" || len(r.Results) == 0 || r.Results[0].Tool != bench.ToolLivemig {
			t.Errorf("row %+v", r)
		}
		for _, res := range r.Results {
			if len(res.Errors) > 0 {
				t.Errorf("%s, %s: %v", r.Key, res.Tool, res.Errors)
			}
		}
	}
	if !slices.Equal(keys, bench.SyncRows) {
		t.Fatalf("rows %v, want %v", keys, bench.SyncRows)
	}
	for _, row := range []string{bench.RowFirstSmall, bench.RowFirstBig, bench.RowSecond, bench.RowDelta} {
		for _, tool := range []string{bench.ToolLivemig, bench.ToolRsync, bench.ToolRsyncInplace} {
			res := syncResult(t, rep, row, tool)
			if res.Skipped != "" || res.Runs != 1 || res.Time.N != 1 || res.Time.Median <= 0 {
				t.Errorf("%s, %s: %+v", row, tool, res)
			}
		}
	}
	for _, row := range []string{bench.RowFirstSmall, bench.RowFirstBig} {
		if res := syncResult(t, rep, row, bench.ToolCp); res.Runs != 1 || res.PerSec <= 0 {
			t.Errorf("%s, cp -a: %+v", row, res)
		}
		if res := syncResult(t, rep, row, bench.ToolLivemig); res.PerSec <= 0 {
			t.Errorf("%s, livemig: no rate: %+v", row, res)
		}
	}
	if res := syncResult(t, rep, bench.RowSecond, bench.ToolCp); res.Skipped == "" {
		t.Errorf("second pass, cp -a: %+v, want skipped with a note", res)
	}
	// The delta: livemig writes a few blocks, rsync --inplace its literal data, rsync -a
	// a new copy of the whole file.
	if lm := syncResult(t, rep, bench.RowDelta, bench.ToolLivemig); lm.BytesWritten < 4096 || lm.BytesWritten > 1<<20 {
		t.Errorf("delta, livemig wrote %d bytes, want 4 KiB to 1 MiB", lm.BytesWritten)
	}
	if rs := syncResult(t, rep, bench.RowDelta, bench.ToolRsync); rs.BytesWritten != 4<<20 {
		t.Errorf("delta, rsync -a wrote %d bytes, want the whole file", rs.BytesWritten)
	}
	if ri := syncResult(t, rep, bench.RowDelta, bench.ToolRsyncInplace); ri.BytesWritten < 4096 || ri.BytesWritten >= 4<<20 {
		t.Errorf("delta, rsync --inplace wrote %d bytes", ri.BytesWritten)
	}
	lagTools := []string{bench.ToolLivemig}
	if lsyncdErr == nil {
		lagTools = append(lagTools, bench.ToolLsyncd0)
	}
	for _, row := range []string{bench.RowLagSmall, bench.RowLagAppend, bench.RowLagBurst} {
		for _, tool := range lagTools {
			res := syncResult(t, rep, row, tool)
			if res.Runs != 1 || res.Missed != 0 || res.LagP50.N != 1 || res.LagP50.Median <= 0 || res.LagP99.Median < res.LagP50.Median {
				t.Errorf("%s, %s: %+v", row, tool, res)
			}
		}
	}
	if res := syncResult(t, rep, bench.RowLagSmall, bench.ToolLivemig); len(res.Samples) != 20 {
		t.Errorf("lag-small samples: %d, want 20", len(res.Samples))
	}
	checkSVG(t, svg)
	page, err := os.ReadFile(md)
	if err != nil || !strings.Contains(string(page), "| the downtime table |") || !strings.Contains(string(page), "# livemig bench sync") ||
		!strings.Contains(string(page), "| first pass, 200 x 4 KiB in 4 dirs | livemig |") {
		t.Errorf("results page (%v):\n%s", err, page)
	}
}

// lsyncd with its default delay (15 s) is measured honestly but capped: a change not
// at DST within --lag-timeout counts as missed, and the table says so.
func TestBenchSyncLsyncdDefaultCapped(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "rsync")
	testutil.RequireTool(t, "lsyncd")
	rep := runBenchSync(t, "--rows", "lag-burst", "--burst", "10", "--peers", "lsyncd", "--lag-timeout", "1s", "--repeat", "2")
	res := syncResult(t, rep, bench.RowLagBurst, bench.ToolLsyncd)
	if res.Runs != 1 || res.Missed != 1 || res.LagP50.Median != -1 || len(res.Notes) == 0 {
		t.Errorf("lsyncd (default delay): %+v; want one run, missed", res)
	}
	if lm := syncResult(t, rep, bench.RowLagBurst, bench.ToolLivemig); lm.Runs != 2 || lm.Missed != 0 {
		t.Errorf("livemig: %+v", lm)
	}
}

// Ctrl-C while a mirror runs: bench stops, its storage is unmounted and no process it
// started is left. TMPDIR points bench's storage into this test's own directory.
func TestBenchSyncInterruptCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	tmp := t.TempDir()
	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(builtLivemig(t), "bench", "sync", "--rows", "lag-small", "--lag-files", "100000", "--peers", "none")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	testutil.Start(t, cmd)
	testutil.Eventually(t, 20*time.Second, "the mirror running", func() bool {
		b, _ := os.ReadFile(out.Name())
		return bytes.Contains(b, []byte("starting the mirror"))
	})
	time.Sleep(500 * time.Millisecond)
	interruptBench(t, cmd, &stderr, tmp)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(tmp)) {
			t.Errorf("left running: %s: %q", p, b)
		}
	}
}
