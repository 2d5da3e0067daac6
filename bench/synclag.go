package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// How often DST is looked at while a change is on its way; more often while only a few
// changes are pending, so that a fast mirror is timed finely and a slow one is not
// drowned in lookups.
const (
	pollFine   = 100 * time.Microsecond
	pollCoarse = time.Millisecond
)

// lag measures the follow lag of every mirror, one after the other, each on a tree of
// its own: a running mirror, changes written at SRC, DST polled until it has them.
func (r *syncRun) lag(ctx context.Context) error {
	for _, tool := range []string{ToolLivemig, ToolLsyncd0, ToolLsyncd} {
		var results []*SyncResult
		var rows []string
		for _, row := range []string{RowLagSmall, RowLagAppend, RowLagBurst} {
			if res := r.result(row, tool); res != nil {
				results = append(results, res)
				rows = append(rows, row)
			}
		}
		if len(results) == 0 {
			continue
		}
		repeat := r.cfg.Repeat
		if tool == ToolLsyncd {
			// Every change waits out the 15 s delay: one run, one append.
			repeat = 1
			for i, res := range results {
				what := "1 run"
				if rows[i] == RowLagAppend {
					what = "1 run of 1 append"
				}
				res.Notes = append(res.Notes, fmt.Sprintf("%s (lsyncd holds changes for up to its 15 s delay); a change not at DST after %s counts as missed", what, r.cfg.LagTimeout))
			}
		}
		err := r.lagTool(ctx, tool, rows, repeat)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.progress("%s: %v", tool, err)
			for _, res := range results {
				res.Errors = append(res.Errors, firstLine(err.Error(), 200))
			}
		}
	}
	return nil
}

// lagTool starts one mirror and runs the lag rows repeat times against it.
func (r *syncRun) lagTool(ctx context.Context, tool string, rows []string, repeat int) (err error) {
	sz := r.cfg.Sizes
	src, dst := filepath.Join(r.st.Src, "lag"), filepath.Join(r.st.Dst, "lag")
	if err := removeAll(src); err != nil {
		return err
	}
	if err := removeAll(dst); err != nil {
		return err
	}
	if err := os.Mkdir(src, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", src, err)
	}
	bigSize := int64(4096)
	if slices.Contains(rows, RowLagAppend) {
		bigSize = sz.LagBig
	}
	if err := writeRandomFile(filepath.Join(src, "big"), bigSize); err != nil {
		return err
	}
	// The directories of every run exist before the mirror starts: a mirror that waits
	// (lsyncd's delay) would otherwise add its delay to every run.
	var dirs []string
	for rep := 1; rep <= repeat; rep++ {
		for _, d := range []string{"small", "burst"} {
			name := fmt.Sprintf("%s-%d", d, rep)
			if err := os.Mkdir(filepath.Join(src, name), 0o755); err != nil {
				return fmt.Errorf("mkdir %s: %w", filepath.Join(src, name), err)
			}
			dirs = append(dirs, name)
		}
	}
	r.progress("follow lag, %s: starting the mirror...", tool)
	m, err := r.startMirror(ctx, tool, src, dst)
	if err != nil {
		return err
	}
	defer func() {
		if serr := m.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	startTimeout := max(60*time.Second, r.cfg.LagTimeout)
	if _, err := waitUntil(ctx, time.Now(), startTimeout, m.exited, func() bool {
		fi, err := os.Stat(filepath.Join(dst, "big"))
		if err != nil || fi.Size() != bigSize {
			return false
		}
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(dst, d)); err != nil {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("the mirror's first pass: %w%s", err, m.logTail())
	}
	for rep := 1; rep <= repeat; rep++ {
		for _, row := range rows {
			res := r.result(row, tool)
			var lat []int64
			var err error
			switch row {
			case RowLagSmall:
				lat, err = lagSmall(ctx, src, dst, fmt.Sprintf("small-%d", rep), sz.LagFiles, sz.FileSize, sz.LagRate, r.cfg.LagTimeout, m.exited)
			case RowLagAppend:
				n := sz.LagAppends
				if tool == ToolLsyncd {
					n = 1
				}
				lat, err = lagAppend(ctx, src, dst, n, sz.Change, r.cfg.LagTimeout, m.exited)
			case RowLagBurst:
				lat, err = lagBurst(ctx, src, dst, fmt.Sprintf("burst-%d", rep), sz.Burst, r.cfg.LagTimeout, m.exited)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("%s run %d: %w%s", row, rep, err, m.logTail())
			}
			p50, p99, pmax := quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1)
			res.p50, res.p99, res.pmax = append(res.p50, p50), append(res.p99, p99), append(res.pmax, pmax)
			missed := 0
			for _, l := range lat {
				if l == lagMissed {
					missed++
				}
			}
			res.Missed += missed
			if row == RowLagSmall {
				res.Samples = append(res.Samples, lat...)
			}
			r.progress("%s, %s #%d: %d changes, p50 %s, p99 %s, max %s, missed %d", row, tool, rep, len(lat),
				lagWord(p50, r.cfg.LagTimeout), lagWord(p99, r.cfg.LagTimeout), lagWord(pmax, r.cfg.LagTimeout), missed)
		}
	}
	return nil
}

// lagWord prints a lag figure, or "> timeout" for a missed one.
func lagWord(ns int64, timeout time.Duration) string {
	if ns == lagMissed {
		return "> " + timeout.String()
	}
	return msShort(ns)
}

// mirror is a running `livemig sync` or lsyncd.
type mirror struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// exited is an error once the mirror has exited.
func (m *mirror) exited() error {
	select {
	case <-m.done:
		return fmt.Errorf("the mirror exited: %v", m.err)
	default:
		return nil
	}
}

// stop ends the mirror and everything it started (its process group): SIGTERM, then
// SIGKILL if it has not exited after 10 s.
func (m *mirror) stop() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	_ = unix.Kill(-m.cmd.Process.Pid, unix.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = unix.Kill(-m.cmd.Process.Pid, unix.SIGKILL)
	<-m.done
	return fmt.Errorf("%s did not stop within 10 s of SIGTERM (killed)", filepath.Base(m.cmd.Path))
}

// logTail is the end of the mirror's log, for an error message.
func (m *mirror) logTail() string {
	data, err := os.ReadFile(m.log)
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return " (" + m.log + ": " + lines[len(lines)-1] + ")"
}

// startMirror starts tool following src into dst, its output in the logs directory.
func (r *syncRun) startMirror(ctx context.Context, tool, src, dst string) (*mirror, error) {
	var cmd *exec.Cmd
	slug := strings.NewReplacer(" ", "-", "(", "", ")", "", "=", "", ",", "").Replace(tool)
	log := filepath.Join(r.logs, slug+".log")
	// The mirror outlives ctx: stop ends it with SIGTERM, so that it cleans up after
	// itself, where a cancelled context would SIGKILL it.
	ctx = context.WithoutCancel(ctx)
	switch tool {
	case ToolLivemig:
		cmd = groupCommand(ctx, r.cfg.Livemig, "sync", src, dst)
	case ToolLsyncd, ToolLsyncd0:
		delay := ""
		if tool == ToolLsyncd0 {
			delay = "delay = 0, "
		}
		conf := filepath.Join(r.logs, slug+".lua")
		lua := fmt.Sprintf("settings { nodaemon = true, logfile = %q, statusFile = %q, insist = true }\n"+
			"sync { default.rsync, source = %q, target = %q, %srsync = { archive = true } }\n",
			log+".lsyncd", filepath.Join(r.logs, slug+".status"), src, dst, delay)
		if err := os.WriteFile(conf, []byte(lua), 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", conf, err)
		}
		cmd = groupCommand(ctx, "lsyncd", conf)
	default:
		return nil, fmt.Errorf("no mirror %q", tool)
	}
	f, err := os.Create(log)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", log, err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", tool, err)
	}
	m := &mirror{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		m.err = cmd.Wait()
		close(m.done)
	}()
	return m, nil
}

// waitUntil polls ok until it holds and returns the time since start; an error when
// timeout passes since start, when alive reports one, or when ctx ends.
func waitUntil(ctx context.Context, start time.Time, timeout time.Duration, alive func() error, ok func() bool) (time.Duration, error) {
	for !ok() {
		if time.Since(start) > timeout {
			return 0, errTimeout
		}
		if err := alive(); err != nil {
			return 0, err
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		time.Sleep(pollFine)
	}
	return time.Since(start), nil
}

var errTimeout = errors.New("timed out")

func sameContent(path string, want []byte) bool {
	got, err := os.ReadFile(path)
	return err == nil && bytes.Equal(got, want)
}

// lagSmall writes n new files of size random bytes into dir at a steady rate (the
// writer never waits for the mirror) and returns each file's lag: from the start of its
// write until DST holds the same bytes; lagMissed past timeout.
func lagSmall(ctx context.Context, src, dst, dir string, n int, size int64, rate float64, timeout time.Duration, alive func() error) ([]int64, error) {
	type change struct {
		name  string
		data  []byte
		start time.Time
	}
	changes := make([]change, n)
	for i := range changes {
		changes[i] = change{name: filepath.Join(dir, fmt.Sprintf("f%05d", i)), data: randomBytes(int(size))}
	}
	written := make(chan int, n)
	werr := make(chan error, 1)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(written)
		interval := time.Duration(float64(time.Second) / rate)
		next := time.Now()
		for i := range changes {
			if wctx.Err() != nil {
				werr <- wctx.Err()
				return
			}
			changes[i].start = time.Now()
			p := filepath.Join(src, changes[i].name)
			if err := os.WriteFile(p, changes[i].data, 0o644); err != nil {
				werr <- fmt.Errorf("write %s: %w", p, err)
				return
			}
			written <- i
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
		werr <- nil
	}()
	lat := make([]int64, n)
	for i := range lat {
		lat[i] = lagMissed
	}
	var pending []int
	open := true
	for open || len(pending) > 0 {
	drain:
		for {
			select {
			case i, ok := <-written:
				if !ok {
					open = false
					break drain
				}
				pending = append(pending, i)
			default:
				break drain
			}
		}
		keep := pending[:0]
		for _, i := range pending {
			c := &changes[i]
			if sameContent(filepath.Join(dst, c.name), c.data) {
				lat[i] = int64(time.Since(c.start))
				continue
			}
			if time.Since(c.start) <= timeout {
				keep = append(keep, i)
			}
		}
		pending = keep
		if err := alive(); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if len(pending) <= 8 {
			time.Sleep(pollFine)
		} else {
			time.Sleep(pollCoarse)
		}
	}
	if err := <-werr; err != nil {
		return nil, err
	}
	return lat, nil
}

// lagAppend appends size random bytes to SRC/big n times, each once DST has caught up
// with the previous one, and returns each append's lag: until DST's copy has the same
// size and the same tail. A missed append ends the run.
func lagAppend(ctx context.Context, src, dst string, n int, size int64, timeout time.Duration, alive func() error) ([]int64, error) {
	s, d := filepath.Join(src, "big"), filepath.Join(dst, "big")
	var lat []int64
	for range n {
		st, err := os.Stat(s)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", s, err)
		}
		if _, err := waitUntil(ctx, time.Now(), timeout, alive, func() bool {
			dt, err := os.Stat(d)
			return err == nil && dt.Size() == st.Size()
		}); err != nil {
			if errors.Is(err, errTimeout) {
				return append(lat, lagMissed), nil
			}
			return nil, err
		}
		tail := randomBytes(int(size))
		want := st.Size() + size
		f, err := os.OpenFile(s, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", s, err)
		}
		start := time.Now()
		_, err = f.Write(tail)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("append to %s: %w", s, err)
		}
		got := make([]byte, size)
		dur, err := waitUntil(ctx, start, timeout, alive, func() bool {
			f, err := os.Open(d)
			if err != nil {
				return false
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil || fi.Size() != want {
				return false
			}
			_, err = f.ReadAt(got, want-size)
			return err == nil && bytes.Equal(got, tail)
		})
		if errors.Is(err, errTimeout) {
			return append(lat, lagMissed), nil
		}
		if err != nil {
			return nil, err
		}
		lat = append(lat, int64(dur))
		time.Sleep(20 * time.Millisecond)
	}
	return lat, nil
}

// lagBurst writes n new files of 1 KiB into dir as fast as it can and returns one
// figure: from the first write until the last file is at DST (lagMissed past timeout).
func lagBurst(ctx context.Context, src, dst, dir string, n int, timeout time.Duration, alive func() error) ([]int64, error) {
	data := randomBytes(1024)
	start := time.Now()
	for i := range n {
		p := filepath.Join(src, dir, fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
	}
	next := 0
	d, err := waitUntil(ctx, start, timeout, alive, func() bool {
		for ; next < n; next++ {
			fi, err := os.Stat(filepath.Join(dst, dir, fmt.Sprintf("f%05d", next)))
			if err != nil || fi.Size() != int64(len(data)) {
				return false
			}
		}
		return true
	})
	if errors.Is(err, errTimeout) {
		return []int64{lagMissed}, nil
	}
	if err != nil {
		return nil, err
	}
	return []int64{int64(d)}, nil
}
