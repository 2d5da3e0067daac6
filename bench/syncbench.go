package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The tools `livemig bench sync` puts side by side. Their names are the JSON's "tool".
const (
	ToolLivemig      = "livemig"
	ToolCp           = "cp -a"
	ToolRsync        = "rsync -a"
	ToolRsyncInplace = "rsync --inplace --no-whole-file"
	ToolLsyncd       = "lsyncd (delay 15 s, its default)"
	ToolLsyncd0      = "lsyncd (delay = 0)"
)

// SyncPeers are the short names of the peers (--peers), in table order.
var SyncPeers = []string{"cp", "rsync", "rsync-inplace", "lsyncd", "lsyncd-delay0"}

// SyncPeerTool maps a short peer name to its tool.
var SyncPeerTool = map[string]string{
	"cp": ToolCp, "rsync": ToolRsync, "rsync-inplace": ToolRsyncInplace,
	"lsyncd": ToolLsyncd, "lsyncd-delay0": ToolLsyncd0,
}

// The rows of `livemig bench sync` (--rows), in table order.
const (
	RowFirstSmall = "first-small"
	RowFirstBig   = "first-big"
	RowSecond     = "second"
	RowDelta      = "delta"
	RowLagSmall   = "lag-small"
	RowLagAppend  = "lag-append"
	RowLagBurst   = "lag-burst"
)

// SyncRows are every row, in table order.
var SyncRows = []string{RowFirstSmall, RowFirstBig, RowSecond, RowDelta, RowLagSmall, RowLagAppend, RowLagBurst}

// SyncSizes are the shape of the data; the defaults are issue 3's figures.
type SyncSizes struct {
	Files      int     `json:"files"`       // small files of the first and second pass
	Dirs       int     `json:"dirs"`        // directories they are spread over
	FileSize   int64   `json:"file_size"`   // bytes each
	BigSize    int64   `json:"big_size"`    // the large file of the first pass and the delta
	Change     int64   `json:"change"`      // bytes changed in the middle of the large file
	LagBig     int64   `json:"lag_big"`     // the file appended to in the append lag row
	LagFiles   int     `json:"lag_files"`   // small files written per lag run
	LagRate    float64 `json:"lag_rate"`    // their rate, files per second
	LagAppends int     `json:"lag_appends"` // appends per lag run
	Burst      int     `json:"burst"`       // new files of one burst
}

// SyncConfig is one `livemig bench sync` invocation.
type SyncConfig struct {
	Sizes   SyncSizes
	FS      string   // tmpfs, ext4 or xfs (both trees)
	Repeat  int      // runs of every tool in every row
	Rows    []string // which rows, from SyncRows
	Tools   []string // the peers, from SyncPeerTool's values; livemig always runs
	Livemig string   // the livemig binary
	// LagTimeout is how long a change may take to reach DST before it counts as
	// missed; lsyncd with its default delay (15 s) needs more than that per change.
	LagTimeout time.Duration
	Progress   io.Writer
}

// SyncResult is one tool in one row.
type SyncResult struct {
	Tool    string   `json:"tool"`
	Skipped string   `json:"skipped,omitempty"` // why it did not run
	Runs    int      `json:"runs"`              // runs without error
	Errors  []string `json:"errors,omitempty"`  // runs that failed, first line each
	Notes   []string `json:"notes,omitempty"`
	// Copy rows: the tool's wall time, and files/s or MB/s at the median.
	Time   Stats   `json:"time_ns"`
	PerSec float64 `json:"per_sec,omitempty"`
	// The delta row: bytes written at DST (median over the runs).
	BytesWritten int64 `json:"bytes_written,omitempty"`
	// Lag rows: per run p50, p99 and max of the changes' lag, median (min–max) over the
	// runs; -1 for a figure beyond LagTimeout (a missed change).
	LagP50 Stats `json:"lag_p50_ns"`
	LagP99 Stats `json:"lag_p99_ns"`
	LagMax Stats `json:"lag_max_ns"`
	Missed int   `json:"missed,omitempty"` // changes not at DST within LagTimeout, all runs
	// Samples is every change's lag of every run (lag-small only; -1 = missed).
	Samples []int64 `json:"lag_samples_ns,omitempty"`

	times, written, p50, p99, pmax []int64
}

// SyncRow is one line of work, every tool.
type SyncRow struct {
	Key     string        `json:"key"`
	Work    string        `json:"work"`
	Unit    string        `json:"unit"` // of PerSec ("files/s", "MB/s"), or "ms" for lag rows
	Target  string        `json:"target"`
	Results []*SyncResult `json:"results"` // livemig first
}

// SyncReport is the whole result of `livemig bench sync`, as --json prints it.
type SyncReport struct {
	Benchmark    string     `json:"benchmark"` // "sync"
	Command      string     `json:"command"`
	Date         string     `json:"date"`
	Machine      Machine    `json:"machine"`
	FS           string     `json:"fs"`
	Repeat       int        `json:"repeat"`
	Sizes        SyncSizes  `json:"sizes"`
	LagTimeoutNS int64      `json:"lag_timeout_ns"`
	Rows         []*SyncRow `json:"rows"`
	Notes        []string   `json:"notes,omitempty"`
}

// Missing lag figure: a change not at DST within the timeout.
const lagMissed = -1

// syncRun is the state of one `livemig bench sync`.
type syncRun struct {
	cfg  SyncConfig
	st   *Storage
	logs string // a directory for the mirrors' logs
	rows map[string]*SyncRow
	rep  *SyncReport
}

// Sync runs the sync benchmark and fills rep's rows. The storage and every process
// it starts are cleaned up before it returns, also on error and when ctx ends.
func Sync(ctx context.Context, cfg SyncConfig, rep *SyncReport) (err error) {
	if cfg.Repeat < 1 {
		cfg.Repeat = 1
	}
	if cfg.LagTimeout <= 0 {
		cfg.LagTimeout = 20 * time.Second
	}
	sz := cfg.Sizes
	need := int64(sz.Files)*max(sz.FileSize, 4096)*11/10 + 2*sz.BigSize + 2*sz.LagBig +
		int64(sz.LagFiles+sz.Burst)*4096*int64(cfg.Repeat+1) + 64<<20
	st, err := NewStorage(cfg.FS, need)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("cleaning up the storage: %w", cerr)
		}
	}()
	logs := filepath.Join(st.Base, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", logs, err)
	}
	r := &syncRun{cfg: cfg, st: st, logs: logs, rows: map[string]*SyncRow{}, rep: rep}
	r.makeRows()
	steps := []struct {
		rows []string
		do   func(context.Context) error
	}{
		{[]string{RowFirstSmall, RowSecond}, r.smallTree},
		{[]string{RowFirstBig, RowDelta}, r.bigFile},
		{[]string{RowLagSmall, RowLagAppend, RowLagBurst}, r.lag},
	}
	for _, s := range steps {
		if !slices.ContainsFunc(s.rows, func(k string) bool { return r.rows[k] != nil }) {
			continue
		}
		if err := s.do(ctx); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	r.finish()
	return nil
}

func (r *syncRun) progress(format string, a ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, format+"\n", a...)
	}
}

// makeRows lays out the table: every selected row, livemig and the tools that apply.
func (r *syncRun) makeRows() {
	sz := r.cfg.Sizes
	defs := []struct {
		key, work, unit, target string
		tools                   []string
	}{
		{RowFirstSmall, fmt.Sprintf("first pass, %d x %s in %d dirs", sz.Files, sizeWord(sz.FileSize), sz.Dirs), "files/s",
			">= 2x rsync -a, >= 1x cp -a", []string{ToolCp, ToolRsync, ToolRsyncInplace}},
		{RowFirstBig, fmt.Sprintf("first pass, one %s file", sizeWord(sz.BigSize)), "MB/s",
			">= 1x cp, >= 2x rsync -a", []string{ToolCp, ToolRsync, ToolRsyncInplace}},
		{RowSecond, fmt.Sprintf("second pass, nothing changed (%d-file tree)", sz.Files), "",
			">= 3x faster than rsync -a", []string{ToolCp, ToolRsync, ToolRsyncInplace}},
		{RowDelta, fmt.Sprintf("%s changed in the middle of a %s file", sizeWord(sz.Change), sizeWord(sz.BigSize)), "",
			"<= 1 MiB written; >= 3x faster than rsync --inplace --no-whole-file", []string{ToolCp, ToolRsync, ToolRsyncInplace}},
		{RowLagSmall, fmt.Sprintf("follow lag, new %s file at %g files/s, until identical at DST", sizeWord(sz.FileSize), sz.LagRate), "ms",
			"p50 <= 5 ms, p99 <= 50 ms", []string{ToolLsyncd0, ToolLsyncd}},
		{RowLagAppend, fmt.Sprintf("follow lag, %s appended to a %s file", sizeWord(sz.Change), sizeWord(sz.LagBig)), "ms",
			"<= 20 ms", []string{ToolLsyncd0, ToolLsyncd}},
		{RowLagBurst, fmt.Sprintf("follow lag, burst of %d new files, until all are at DST", sz.Burst), "ms",
			"<= 200 ms", []string{ToolLsyncd0, ToolLsyncd}},
	}
	for _, d := range defs {
		if !slices.Contains(r.cfg.Rows, d.key) {
			continue
		}
		row := &SyncRow{Key: d.key, Work: d.work, Unit: d.unit, Target: d.target}
		row.Results = append(row.Results, &SyncResult{Tool: ToolLivemig})
		for _, t := range d.tools {
			if !slices.Contains(r.cfg.Tools, t) {
				continue
			}
			res := &SyncResult{Tool: t}
			res.Skipped = toolMissing(t)
			switch {
			case t == ToolCp && d.key == RowSecond:
				res.Skipped = "cp -a has no incremental mode: it copies everything again (the first pass row)"
			case t == ToolCp && d.key == RowDelta:
				res.Skipped = "cp -a has no incremental mode: it rewrites the whole file (the first pass row)"
			}
			row.Results = append(row.Results, res)
		}
		r.rows[d.key] = row
		r.rep.Rows = append(r.rep.Rows, row)
	}
}

// toolMissing says why a tool cannot run here, or "".
func toolMissing(tool string) string {
	bin := map[string]string{ToolCp: "cp", ToolRsync: "rsync", ToolRsyncInplace: "rsync", ToolLsyncd: "lsyncd", ToolLsyncd0: "lsyncd"}[tool]
	if bin == "" {
		return ""
	}
	if _, err := exec.LookPath(bin); err != nil {
		return bin + " is not installed"
	}
	if strings.HasPrefix(tool, "lsyncd") {
		if _, err := exec.LookPath("rsync"); err != nil {
			return "rsync is not installed (lsyncd's default.rsync runs it)"
		}
	}
	return ""
}

func sizeWord(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// result is the tool's result in a row, nil when the row is not selected or the tool
// is not run there.
func (r *syncRun) result(row, tool string) *SyncResult {
	rw := r.rows[row]
	if rw == nil {
		return nil
	}
	for _, res := range rw.Results {
		if res.Tool == tool && res.Skipped == "" {
			return res
		}
	}
	return nil
}

// groupCommand starts nothing yet: the tool's process in a group of its own, so that a
// cancelled context kills it and the processes it forked (rsync forks two).
func groupCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true} // Ctrl-C is bench's to handle
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// timed runs one copy and returns its wall time and its stdout.
func timed(ctx context.Context, name string, args ...string) (time.Duration, []byte, error) {
	cmd := groupCommand(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return d, nil, ctx.Err()
		}
		return d, nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, firstLine(strings.TrimSpace(stderr.String()), 200))
	}
	return d, stdout.Bytes(), nil
}

// copyArgs is the command line of one copy of the tree src to dst by a tool.
func (r *syncRun) copyArgs(tool, src, dst string) (string, []string) {
	switch tool {
	case ToolLivemig:
		return r.cfg.Livemig, []string{"sync", "--once", "--json", src, dst}
	case ToolCp:
		return "cp", []string{"-a", src, dst}
	case ToolRsync:
		return "rsync", []string{"-a", "--stats", src + "/", dst + "/"}
	case ToolRsyncInplace:
		return "rsync", []string{"-a", "--inplace", "--no-whole-file", "--stats", src + "/", dst + "/"}
	}
	return "false", nil
}

var (
	rsyncLiteral = regexp.MustCompile(`(?m)^Literal data: ([0-9,]+) bytes`)
	rsyncTotal   = regexp.MustCompile(`(?m)^Total transferred file size: ([0-9,]+) bytes`)
)

// written is what the tool wrote at DST, from its own report: livemig's bytes_written;
// rsync --inplace writes its literal data only (blocks that match at the same offset
// are skipped), rsync without --inplace writes a whole new copy of each file it sends.
func written(tool string, out []byte) (int64, error) {
	switch tool {
	case ToolLivemig:
		var rep struct {
			Stats struct {
				BytesWritten int64 `json:"bytes_written"`
			} `json:"stats"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			return 0, fmt.Errorf("livemig sync --json output does not parse: %w", err)
		}
		return rep.Stats.BytesWritten, nil
	case ToolRsync, ToolRsyncInplace:
		re := rsyncTotal
		if tool == ToolRsyncInplace {
			re = rsyncLiteral
		}
		m := re.FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("rsync --stats: no %q line", strings.SplitN(re.String(), ":", 2)[0])
		}
		return strconv.ParseInt(strings.ReplaceAll(string(m[1]), ",", ""), 10, 64)
	}
	return 0, nil
}

// runCopy runs one timed copy by tool and records it in res; prep runs untimed first.
func (r *syncRun) runCopy(ctx context.Context, res *SyncResult, row, src, dst string, prep func() error, perUnit float64) error {
	if res == nil {
		return nil
	}
	if prep != nil {
		if err := prep(); err != nil {
			return err
		}
	}
	name, args := r.copyArgs(res.Tool, src, dst)
	d, out, err := timed(ctx, name, args...)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		res.Errors = append(res.Errors, firstLine(err.Error(), 200))
		r.progress("%s, %s: error: %v", row, res.Tool, err)
		return nil
	}
	res.times = append(res.times, int64(d))
	msg := fmt.Sprintf("%s, %s: %.3f s", row, res.Tool, d.Seconds())
	if row == RowDelta {
		w, err := written(res.Tool, out)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			return nil
		}
		res.written = append(res.written, w)
		msg += fmt.Sprintf(", %d bytes written", w)
	} else if perUnit > 0 {
		msg += fmt.Sprintf(" (%.0f %s)", perUnit/d.Seconds(), r.rows[row].Unit)
	}
	r.progress("%s", msg)
	return nil
}

// rowTools are the tools that run in a row, livemig first.
func (r *syncRun) rowTools(row string) []*SyncResult {
	var out []*SyncResult
	if rw := r.rows[row]; rw != nil {
		for _, res := range rw.Results {
			if res.Skipped == "" {
				out = append(out, res)
			}
		}
	}
	return out
}

// smallTree: the first pass of the small-file tree, then a second pass with nothing
// changed. The tools take turns within each repeat.
func (r *syncRun) smallTree(ctx context.Context) error {
	sz := r.cfg.Sizes
	src, dst := filepath.Join(r.st.Src, "small"), filepath.Join(r.st.Dst, "small")
	r.progress("making %d files of %d bytes in %d directories...", sz.Files, sz.FileSize, sz.Dirs)
	if err := makeSmallTree(src, sz.Files, sz.Dirs, sz.FileSize); err != nil {
		return err
	}
	clear := func() error { return removeAll(dst) }
	if r.rows[RowFirstSmall] != nil {
		if err := r.warmUp(ctx, src, dst); err != nil {
			return err
		}
	}
	for rep := 0; rep < r.cfg.Repeat; rep++ {
		for _, res := range r.rowTools(RowFirstSmall) {
			if err := r.runCopy(ctx, res, RowFirstSmall, src, dst, clear, float64(sz.Files)); err != nil {
				return err
			}
		}
	}
	if r.rows[RowSecond] == nil {
		return removeAll(dst)
	}
	// DST in sync, with exact times: every tool's second pass finds nothing to do.
	if err := clear(); err != nil {
		return err
	}
	if _, _, err := timed(ctx, r.cfg.Livemig, "sync", "--once", src, dst); err != nil {
		return fmt.Errorf("preparing the second pass: %w", err)
	}
	for rep := 0; rep < r.cfg.Repeat; rep++ {
		for _, res := range r.rowTools(RowSecond) {
			if err := r.runCopy(ctx, res, RowSecond, src, dst, nil, 0); err != nil {
				return err
			}
		}
	}
	return removeAll(dst)
}

// bigFile: the first pass of one large file, then a change in its middle.
func (r *syncRun) bigFile(ctx context.Context) error {
	sz := r.cfg.Sizes
	src, dst := filepath.Join(r.st.Src, "big"), filepath.Join(r.st.Dst, "big")
	if err := os.Mkdir(src, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", src, err)
	}
	file := filepath.Join(src, "big")
	r.progress("making a file of %d bytes...", sz.BigSize)
	if err := writeRandomFile(file, sz.BigSize); err != nil {
		return err
	}
	clear := func() error { return removeAll(dst) }
	mb := float64(sz.BigSize) / 1e6
	if err := r.warmUp(ctx, src, dst); err != nil {
		return err
	}
	for rep := 0; rep < r.cfg.Repeat; rep++ {
		for _, res := range r.rowTools(RowFirstBig) {
			if err := r.runCopy(ctx, res, RowFirstBig, src, dst, clear, mb); err != nil {
				return err
			}
		}
	}
	if r.rows[RowDelta] != nil {
		if _, _, err := timed(ctx, r.cfg.Livemig, "sync", "--once", src, dst); err != nil {
			return fmt.Errorf("preparing the delta: %w", err)
		}
		at := (sz.BigSize / 2) &^ 4095
		// Each change moves the mtime by whole seconds: rsync compares whole seconds by
		// default, and would skip a change made within the second of the last copy.
		mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
		poke := func() error {
			mtime = mtime.Add(time.Second)
			return pokeFile(file, at, sz.Change, mtime)
		}
		for rep := 0; rep < r.cfg.Repeat; rep++ {
			for _, res := range r.rowTools(RowDelta) {
				if err := r.runCopy(ctx, res, RowDelta, src, dst, poke, 0); err != nil {
					return err
				}
			}
		}
	}
	if err := removeAll(dst); err != nil {
		return err
	}
	return removeAll(src)
}

// warmUp copies src to dst once, untimed, and removes the copy: the first run of the
// first tool would otherwise pay alone for DST's first touch (tmpfs pages, inodes).
func (r *syncRun) warmUp(ctx context.Context, src, dst string) error {
	if _, _, err := timed(ctx, r.cfg.Livemig, "sync", "--once", src, dst); err != nil {
		return fmt.Errorf("warm-up copy: %w", err)
	}
	return removeAll(dst)
}

// finish computes every result's statistics.
func (r *syncRun) finish() {
	for _, row := range r.rep.Rows {
		for _, res := range row.Results {
			res.Runs = max(len(res.times), len(res.p50))
			res.Time = StatsOf(res.times)
			if res.Time.N > 0 && row.Unit != "" && row.Unit != "ms" {
				units := float64(r.cfg.Sizes.Files)
				if row.Key == RowFirstBig {
					units = float64(r.cfg.Sizes.BigSize) / 1e6
				}
				res.PerSec = units / (float64(res.Time.Median) / 1e9)
			}
			if len(res.written) > 0 {
				res.BytesWritten = StatsOf(res.written).Median
			}
			res.LagP50, res.LagP99, res.LagMax = lagStats(res.p50), lagStats(res.p99), lagStats(res.pmax)
		}
	}
}

// lagStats is StatsOf for lag figures, where lagMissed (a change not at DST within the
// timeout) counts as larger than any figure.
func lagStats(v []int64) Stats {
	if len(v) == 0 {
		return Stats{}
	}
	s := make([]int64, len(v))
	for i, x := range v {
		s[i] = x
		if x == lagMissed {
			s[i] = 1<<63 - 1
		}
	}
	slices.Sort(s)
	back := func(x int64) int64 {
		if x == 1<<63-1 {
			return lagMissed
		}
		return x
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		a, b := s[len(s)/2-1], s[len(s)/2]
		med = b
		if b != 1<<63-1 {
			med = (a + b) / 2
		}
	}
	return Stats{Median: back(med), Min: back(s[0]), Max: back(s[len(s)-1]), N: len(s)}
}

// quantile is the q-quantile of lags (lagMissed counts as the largest).
func quantile(lags []int64, q float64) int64 {
	if len(lags) == 0 {
		return lagMissed
	}
	s := slices.Clone(lags)
	slices.SortFunc(s, func(a, b int64) int {
		if a == lagMissed {
			a = 1<<63 - 1
		}
		if b == lagMissed {
			b = 1<<63 - 1
		}
		return cmpInt(a, b)
	})
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// makeSmallTree writes files of size random bytes spread over dirs directories.
func makeSmallTree(root string, files, dirs int, size int64) error {
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, size)
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(root, fmt.Sprintf("dir%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
		for i := d; i < files; i += dirs {
			_, _ = rng.Read(buf)
			p := filepath.Join(dir, fmt.Sprintf("f%05d", i))
			if err := os.WriteFile(p, buf, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
		}
	}
	return nil
}

// writeRandomFile writes size random bytes to path.
func writeRandomFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	rng := rand.NewChaCha8([32]byte{2})
	_, err = io.CopyN(f, rng, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// pokeFile overwrites n bytes of path at offset at with new random bytes, and sets
// its times to mtime.
func pokeFile(path string, at, n int64, mtime time.Time) error {
	buf := randomBytes(int(n))
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	_, err = f.WriteAt(buf, at)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s at %d: %w", path, at, err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		return fmt.Errorf("set the times of %s: %w", path, err)
	}
	return nil
}

func removeAll(path string) error {
	if err := os.RemoveAll(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// randomBytes is n fresh random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}
