package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/livemig/livemig/cutover"
	livesync "github.com/livemig/livemig/sync"
)

func init() {
	register(&command{
		name:    "cutover",
		summary: "freeze the processes using SRC, copy the last delta, move them onto DST, resume",
		usage: `cutover SRC DST [--remount] [--freeze sigstop|ptrace] [--pid PID]... [--strict] [--json]

  livemig cutover /srv/data /mnt/new/data        re-point every process from SRC/... to DST/...
  livemig cutover --remount /srv/data /mnt/new   the filesystem at DST takes SRC's place
  livemig cutover --freeze ptrace --pid 4242 /srv/data /mnt/new/data

A mirror pass runs first (outside the pause) unless DST is already a converged mirror
(see 'livemig migrate'); the pause then only covers the last changes.
Exit status: 0 done; 1 failed and rolled back (every process back on SRC, running);
2 bad usage or input (nothing touched); 3 done with leftovers (listed).`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			var cfg cutover.Config
			fs.BoolVar(&cfg.Remount, "remount", false, "mount DST's filesystem on SRC's path (both must be mount points)")
			freeze := fs.String("freeze", "sigstop", "how processes are held: sigstop (as the recipes) or ptrace (invisible to the parent)")
			fs.IntSliceVar(&cfg.PIDs, "pid", nil, "only these processes (repeatable)")
			fs.BoolVar(&cfg.Strict, "strict", false, "treat leftovers as failure: roll back")
			asJSON := fs.Bool("json", false, "print the report as JSON on stdout")
			return func(args []string) error {
				if len(args) != 2 {
					return usagef("cutover needs SRC and DST (got %d arguments)", len(args))
				}
				cfg.Src, cfg.Dst, cfg.Freeze = args[0], args[1], cutover.FreezeMode(*freeze)
				cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return runCutover(ctx, cfg, *asJSON, os.Stdout)
			}
		},
	})
}

// runCutover mirrors SRC to DST outside the pause, then runs the cutover with that mirror
// as its final delta, and prints the report.
func runCutover(ctx context.Context, cfg cutover.Config, asJSON bool, out io.Writer) error {
	probe := cfg
	probe.Delta = noDelta{}
	if err := cutover.Validate(&probe); err != nil {
		return usagef("%v", err)
	}
	cfg.Src, cfg.Dst = probe.Src, probe.Dst
	m, err := startMirror(ctx, cfg.Src, cfg.Dst, cfg.Log)
	if err != nil {
		return err
	}
	defer m.stop()
	cfg.Delta = m
	rep, err := cutover.Run(ctx, cfg)
	var in *cutover.InputError
	if errors.As(err, &in) {
		return usagef("%v", in)
	}
	printReport(out, rep, asJSON)
	switch {
	case err != nil:
		return exitError{exitFailed, fmt.Errorf("rolled back: %w", err)}
	case rep.Result == cutover.ResultWithLeftovers:
		return exitError{exitLeftovers, fmt.Errorf("done, with %d leftovers", len(rep.Leftovers))}
	}
	return nil
}

// noDelta stands in for the mirror while the input is checked.
type noDelta struct{}

func (noDelta) FinalDelta(context.Context, []string) error { return nil }
func (noDelta) Release() error                             { return nil }

// followingMirror is a mirror that follows SRC from before the freeze until the final
// delta, which flushes it and stops it for good.
type followingMirror struct {
	m *livesync.Mirror
	f *follower
}

func startMirror(ctx context.Context, src, dst string, log *slog.Logger) (*followingMirror, error) {
	m, err := livesync.New(livesync.Options{Src: src, Dst: dst, Delete: true, Logger: log})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := m.InitialPass(ctx); err != nil {
		m.Close()
		return nil, fmt.Errorf("first mirror pass: %w", err)
	}
	log.Info("first mirror pass done", "elapsed", time.Since(start).Round(time.Millisecond))
	return &followingMirror{m: m, f: startFollower(m, 0)}, nil
}

// FinalDelta stops following first: the writers are frozen, so what is left is in the
// queue, and the flush then copies it without a batch of Follow's in its way.
func (f *followingMirror) FinalDelta(ctx context.Context, paths []string) error {
	f.f.stop()
	return f.m.Flush(ctx, paths)
}

// Release closes the mirror, after the processes run again.
func (f *followingMirror) Release() error {
	f.stop()
	return nil
}

func (f *followingMirror) stop() {
	if f.m != nil {
		f.f.stop()
		f.m.Close()
		f.m = nil
	}
}

func printReport(w io.Writer, rep *cutover.Report, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	fmt.Fprintf(w, "cutover %s -> %s: %s\n", rep.Src, rep.Dst, rep.Result)
	if rep.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", rep.Error)
	}
	fmt.Fprintln(w, "  phases:")
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "    %-12s %v\n", p.Name, time.Duration(p.DurationNs).Round(time.Microsecond))
	}
	fmt.Fprintln(w, "  processes:")
	for _, p := range rep.Processes {
		fmt.Fprintf(w, "    pid %-7d %-16s pause %-10v fds %d, cwd %v, maps %d\n", p.PID, p.Comm,
			time.Duration(p.PauseNs).Round(time.Microsecond), p.FDsMoved, p.CwdMoved, p.MapsMoved)
	}
	for _, l := range rep.Leftovers {
		fmt.Fprintf(w, "  leftover: pid %d %s %s: %s\n", l.PID, l.What, l.Path, l.Reason)
	}
}
