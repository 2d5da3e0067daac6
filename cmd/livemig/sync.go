package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	livesync "github.com/livemig/livemig/sync"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:    "sync",
		summary: "mirror SRC to DST, then follow its changes until SIGINT/SIGTERM",
		usage: `sync SRC DST [--once] [--jobs N] [--checksum] [--no-delete] [--exclude PAT]... [--exclude-from FILE]
     [--status-file FILE] [--json]

  livemig sync /srv/data /mnt/new/data            first pass, then follow until Ctrl-C
  livemig sync --once --exclude '*.tmp' /a /b     one pass, like rsync -aHAX --delete

  livemig sync --status-file /run/livemig/data.json /srv/data /mnt/new/data &
  livemig status --status-file /run/livemig/data.json

Progress and per-path problems go to stderr; with --json a summary goes to stdout.
While following, the status ('livemig status') is kept in --status-file, by default
` + statusDir + `/sync-DST.json.
Exit status: 0 done; 1 stopped on an error (DST full, no inotify watch left);
2 bad usage or input; 3 done, but some paths could not be mirrored (listed).`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			once := fs.Bool("once", false, "stop after the first pass")
			jobs := fs.IntP("jobs", "j", 0, "parallel workers (default: one per CPU)")
			checksum := fs.BoolP("checksum", "c", false, "compare file content, not only size and mtime")
			noDelete := fs.Bool("no-delete", false, "keep entries at DST that SRC does not have")
			excludes := fs.StringArray("exclude", nil, "exclude files matching PAT (rsync syntax; repeatable)")
			excludeFrom := fs.StringArray("exclude-from", nil, "read exclude patterns from FILE")
			asJSON := fs.Bool("json", false, "print a machine-readable summary on stdout")
			statusPath := fs.String("status-file", "", "where to keep the status for 'livemig status' (default "+statusDir+"/sync-DST.json)")
			return func(args []string) error {
				if len(args) != 2 {
					return usagef("sync needs SRC and DST (got %d arguments)", len(args))
				}
				if *jobs < 0 {
					return usagef("--jobs must be positive")
				}
				pats := append([]string(nil), *excludes...)
				for _, f := range *excludeFrom {
					more, err := livesync.ReadExcludeFile(f)
					if err != nil {
						return usagef("--exclude-from: %v", err)
					}
					pats = append(pats, more...)
				}
				opts := livesync.Options{
					Src: args[0], Dst: args[1], Jobs: *jobs, Checksum: *checksum,
					Delete: !*noDelete, Excludes: pats,
					Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
				}
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				var stats livesync.Stats
				var err error
				if *once {
					stats, err = livesync.Once(ctx, opts)
				} else {
					stats, err = follow(ctx, opts, *statusPath)
				}
				return report(stats, err, *asJSON, "mirrored")
			}
		},
	})
}

// follow runs a mirror until ctx is done, logging its lag now and then and keeping
// its status in statusPath ("" for the default).
func follow(ctx context.Context, opts livesync.Options, statusPath string) (livesync.Stats, error) {
	m, err := livesync.New(opts)
	if err != nil {
		return livesync.Stats{}, err
	}
	defer m.Close()
	tr := newTracker("sync", opts.Src, opts.Dst)
	tr.setMirror(m)
	explicit := statusPath != ""
	if !explicit {
		statusPath = defaultStatusPath("sync", opts.Dst)
	}
	sf := newStatusFile(statusPath, explicit, opts.Logger)
	go tr.count.count(ctx, opts.Src)
	defer func() { // the last word, once Follow has returned
		s := m.Stats()
		tr.mirrorClosed(s)
		phase, detail := phaseStopped, ""
		if err != nil {
			phase, detail = phaseFailed, err.Error()
		}
		tr.setPhase(phase, detail)
		sf.write(tr.status())
	}()
	statusTick := time.NewTicker(500 * time.Millisecond)
	defer statusTick.Stop()
	done := make(chan error, 1)
	go func() { done <- m.Follow(ctx) }()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err = <-done:
			if errors.Is(err, context.Canceled) {
				err = nil // SIGINT/SIGTERM: a clean stop
			}
			return m.Stats(), err
		case <-statusTick.C:
			if tr.currentPhase() == phaseFirstPass && !m.Lag().Rescanning {
				tr.setPhase(phaseFollowing, "")
			}
			sf.write(tr.status())
		case <-tick.C:
			l := m.Lag()
			opts.Logger.Info("following", "dirty_paths", l.DirtyPaths, "dirty_bytes", l.DirtyBytes,
				"oldest", l.Oldest.Round(time.Millisecond), "estimate", l.Estimate.Round(time.Millisecond))
		}
	}
}

// report prints a summary and turns the outcome into the exit status of the contract.
func report(stats livesync.Stats, err error, asJSON bool, what string) error {
	var in *livesync.InputError
	if errors.As(err, &in) {
		return usagef("%v", in)
	}
	if asJSON {
		out := struct {
			OK    bool           `json:"ok"`
			Error string         `json:"error,omitempty"`
			Stats livesync.Stats `json:"stats"`
		}{OK: err == nil && stats.Problems == 0, Stats: stats}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	} else {
		fmt.Fprintf(os.Stderr, "%s %d entries in %v: %d files copied (%d bytes written), %d deleted, %d renamed, %d linked, %d problems\n",
			what, stats.Entries, stats.Elapsed.Round(time.Millisecond), stats.FilesCopied, stats.BytesWritten,
			stats.Deleted, stats.Renamed, stats.Linked, stats.Problems)
	}
	if err != nil {
		return exitError{exitFailed, err}
	}
	if stats.Problems > 0 {
		for _, e := range stats.Errors {
			fmt.Fprintf(os.Stderr, "not mirrored: %v\n", &e)
		}
		return exitError{exitLeftovers, fmt.Errorf("%d paths could not be mirrored", stats.Problems)}
	}
	return nil
}
