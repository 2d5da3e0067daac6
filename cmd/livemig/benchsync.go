package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/livemig/livemig/bench"
)

func init() {
	register(&command{
		name:    "bench sync",
		summary: "measure the mirror (livemig sync) against cp -a, rsync and lsyncd",
		usage: `bench sync [flags]

Creates its own SRC and DST storage (two tmpfs by default, --fs), makes the data, and runs,
side by side in the same run with the tools taking turns: the first pass of many small
files and of one large file, a second pass with nothing changed, a small change in the
middle of the large file (time, and bytes written at DST), with livemig sync --once,
cp -a, rsync -a and rsync --inplace --no-whole-file; then the follow lag of a running
mirror (new small files at a steady rate, an append to a large file, a burst of new
files) with livemig sync, lsyncd (default.rsync) with delay = 0, and lsyncd with its
default 15 s delay (one run, each change capped at --lag-timeout). A missing tool is
skipped with a note. Needs root (it mounts its storage).

Examples:
  livemig bench sync
  livemig bench sync --repeat 3 --markdown bench/results.md --svg bench/sync.svg
  livemig bench sync --files 2000 --big 256M --rows first-small,lag-small --peers rsync`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			files := fs.Int("files", 20000, "small files of the first and second pass")
			dirs := fs.Int("dirs", 200, "directories the small files are spread over")
			fileSize := fs.String("file-size", "4K", "size of each small file (also the lag row's files)")
			big := fs.String("big", "2G", "size of the large file (first pass and delta)")
			change := fs.String("change", "4K", "bytes changed in the middle of the large file, and appended in the append lag row")
			lagBig := fs.String("lag-big", "200M", "size of the file appended to in the append lag row")
			lagFiles := fs.Int("lag-files", 500, "new small files per run of the small-file lag row")
			lagRate := fs.Float64("lag-rate", 100, "their rate, files per second")
			appends := fs.Int("appends", 30, "appends per run of the append lag row")
			burst := fs.Int("burst", 1000, "new files of one burst")
			lagTimeout := fs.Duration("lag-timeout", 20*time.Second, "a change not at DST after this counts as missed (lsyncd's default delay is 15 s)")
			fstype := fs.String("fs", "tmpfs", "filesystem of SRC and DST: "+strings.Join(bench.FSTypes, ", "))
			repeat := fs.Int("repeat", 3, "runs of every tool in every row (the table gives median, min and max)")
			rows := fs.StringSlice("rows", bench.SyncRows, "rows to run: "+strings.Join(bench.SyncRows, ", "))
			peers := fs.StringSlice("peers", bench.SyncPeers, "peers run beside livemig: "+strings.Join(bench.SyncPeers, ", ")+", or none")
			asJSON := fs.Bool("json", false, "print the result as JSON on stdout (progress goes to stderr)")
			svg := fs.String("svg", "", "write a plot (SVG) of the small-file lag distribution of every mirror to FILE")
			markdown := fs.String("markdown", "", "write the sync section (table, machine, date, command) of the results page FILE, keeping its other sections")
			return func(args []string) error {
				if len(args) != 0 {
					return usagef("bench sync takes no arguments (got %q)", strings.Join(args, " "))
				}
				sz := bench.SyncSizes{Files: *files, Dirs: *dirs, LagFiles: *lagFiles, LagRate: *lagRate, LagAppends: *appends, Burst: *burst}
				for _, s := range []struct {
					flag, val string
					dst       *int64
					lo, hi    int64
				}{
					{"--file-size", *fileSize, &sz.FileSize, 1, 64 << 20},
					{"--big", *big, &sz.BigSize, 4096, 64 << 30},
					{"--change", *change, &sz.Change, 1, 64 << 20},
					{"--lag-big", *lagBig, &sz.LagBig, 4096, 64 << 30},
				} {
					n, err := parseBytes(s.val)
					if err != nil {
						return usagef("%s: %v", s.flag, err)
					}
					if n < s.lo || n > s.hi {
						return usagef("%s %s: want %d to %d bytes", s.flag, s.val, s.lo, s.hi)
					}
					*s.dst = n
				}
				switch {
				case sz.Files < 1 || sz.Files > 10_000_000:
					return usagef("--files %d: want 1 to 10000000", sz.Files)
				case sz.Dirs < 1 || sz.Dirs > sz.Files:
					return usagef("--dirs %d: want 1 to --files (%d)", sz.Dirs, sz.Files)
				case sz.Change > sz.BigSize/2:
					return usagef("--change %s: want at most half of --big (%s)", *change, *big)
				case sz.LagFiles < 1 || sz.LagFiles > 1_000_000:
					return usagef("--lag-files %d: want 1 to 1000000", sz.LagFiles)
				case !(sz.LagRate >= 0.1 && sz.LagRate <= 100000):
					return usagef("--lag-rate %g: want 0.1 to 100000 files per second", sz.LagRate)
				case sz.LagAppends < 1 || sz.LagAppends > 100000:
					return usagef("--appends %d: want 1 to 100000", sz.LagAppends)
				case sz.Burst < 1 || sz.Burst > 1_000_000:
					return usagef("--burst %d: want 1 to 1000000", sz.Burst)
				case *lagTimeout < 100*time.Millisecond || *lagTimeout > time.Hour:
					return usagef("--lag-timeout %s: want 100ms to 1h", *lagTimeout)
				case !slices.Contains(bench.FSTypes, *fstype):
					return usagef("--fs %q: want one of %s", *fstype, strings.Join(bench.FSTypes, ", "))
				case *repeat < 1 || *repeat > 100:
					return usagef("--repeat %d: want 1 to 100", *repeat)
				}
				var rowSel []string
				for _, r := range *rows {
					if !slices.Contains(bench.SyncRows, r) {
						return usagef("--rows %q: want %s", r, strings.Join(bench.SyncRows, ", "))
					}
					rowSel = append(rowSel, r)
				}
				if len(rowSel) == 0 {
					return usagef("--rows: nothing to run")
				}
				var tools []string
				for _, p := range *peers {
					switch t, ok := bench.SyncPeerTool[p]; {
					case p == "none":
					case ok:
						tools = append(tools, t)
					default:
						return usagef("--peers %q: want %s or none", p, strings.Join(bench.SyncPeers, ", "))
					}
				}
				if os.Geteuid() != 0 {
					return usagef("bench sync needs root: it mounts its own storage")
				}
				self, ctx, stop, progress, err := benchStart(*asJSON)
				if err != nil {
					return err
				}
				defer stop()
				rep := &bench.SyncReport{
					Benchmark:    "sync",
					Command:      "livemig " + strings.Join(os.Args[1:], " "),
					Date:         time.Now().UTC().Format("2006-01-02 15:04 UTC"),
					Machine:      bench.ThisMachine(),
					FS:           *fstype,
					Repeat:       *repeat,
					Sizes:        sz,
					LagTimeoutNS: int64(*lagTimeout),
				}
				err = bench.Sync(ctx, bench.SyncConfig{
					Sizes: sz, FS: *fstype, Repeat: *repeat, Rows: rowSel, Tools: tools, Livemig: self,
					LagTimeout: *lagTimeout, Progress: progress,
				}, rep)
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: storage unmounted and mirrors stopped")
				}
				if err != nil {
					return err
				}
				return benchFinish(rep, "sync", *asJSON, *markdown, *svg, rep.WriteSVG)
			}
		},
	})
}
