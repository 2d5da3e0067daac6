package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/livemig/livemig/bench"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "measure livemig against the manual recipes (bench downtime) and its peers (bench sync)",
		usage: `bench downtime [flags]
       (livemig bench sync --help: the mirror against cp, rsync and lsyncd)

downtime: creates its own old and new storage (loop-mounted images, or tmpfs), starts
writer processes that append "<seq> <CLOCK_MONOTONIC ns>" lines to files they keep open
(cwd in their directory), migrates them, and reports the pause each writer saw (from its
own lines), the total time and whether every line landed once, in order, on the new
storage. Methods, on identical workloads: livemig cutover (re-pointing to DST, and
--remount), and the manual recipes as peers: gdb (seed 000, one gdb per process) and
rsync-remount (seed 001: SIGSTOP, rsync, remount, SIGCONT, gdb chdir). Every case also
has a control run (no migration): its largest gap is the machine's own jitter.
Needs root (mount, losetup, ptrace), gcc (the writer is built at run time).

Examples:
  livemig bench downtime
  livemig bench downtime --procs 20 --files 8 --rate 250 --repeat 3
  livemig bench downtime --matrix 1x1@1000,1x64@500,20x8@250 --markdown bench/results.md --svg bench/downtime.svg`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			procs := fs.Int("procs", 1, "writer processes")
			files := fs.Int("files", 1, "files per process")
			threads := fs.Int("threads", 1, "threads per process (files shared out among them)")
			rate := fs.Int("rate", 1000, "lines per second per file")
			size := fs.String("size", "32M", "size of the pre-filled tree beside the logs (K, M, G suffixes)")
			dirty := fs.String("dirty-rate", "0", "bytes per second rewritten in the pre-filled tree by a background writer (K, M suffixes)")
			fstype := fs.String("fs", "ext4", "filesystem of the old and new storage: "+strings.Join(bench.FSTypes, ", "))
			repeat := fs.Int("repeat", 1, "runs of each method per case (the table gives median, min and max)")
			asJSON := fs.Bool("json", false, "print the result as JSON on stdout (progress goes to stderr)")
			svg := fs.String("svg", "", "write a timeline plot (SVG) of each method's first run to FILE")
			markdown := fs.String("markdown", "", "write the downtime section (table, machine, date, command) of the results page FILE, keeping its other sections")
			peers := fs.StringSlice("peers", bench.Peers, "manual recipes run beside livemig: gdb, rsync-remount, or none (one missing its tool is skipped with a note)")
			livemigModes := fs.StringSlice("livemig", []string{"repoint", "remount"}, "livemig cutovers to run: repoint (SRC -> DST paths), remount (--remount), or none")
			matrix := fs.StringSlice("matrix", nil, "several cases, each PROCSxFILES[@RATE] (e.g. 1x1@1000,20x8@250); overrides --procs, --files and --rate")
			before := fs.Duration("before", 500*time.Millisecond, "how long the workload runs before the migration")
			after := fs.Duration("after", time.Second, "how long the workload runs after the migration")
			return func(args []string) error {
				if len(args) != 1 || args[0] != "downtime" {
					return usagef("bench takes one argument, the benchmark: downtime or sync, before its flags (got %q)", strings.Join(args, " "))
				}
				sz, err := parseBytes(*size)
				if err != nil {
					return usagef("--size: %v", err)
				}
				dr, err := parseBytes(*dirty)
				if err != nil {
					return usagef("--dirty-rate: %v", err)
				}
				base := bench.Shape{Procs: *procs, Files: *files, Threads: *threads, Rate: *rate, Size: sz, DirtyRate: dr}
				cases := []bench.Shape{base}
				if len(*matrix) > 0 {
					cases = nil
					for _, m := range *matrix {
						sh, err := parseCase(m, base)
						if err != nil {
							return usagef("--matrix %q: %v", m, err)
						}
						cases = append(cases, sh)
					}
				}
				for _, sh := range cases {
					if err := checkShape(sh); err != nil {
						return err
					}
				}
				if !slices.Contains(bench.FSTypes, *fstype) {
					return usagef("--fs %q: want one of %s", *fstype, strings.Join(bench.FSTypes, ", "))
				}
				if *repeat < 1 || *repeat > 100 {
					return usagef("--repeat %d: want 1 to 100", *repeat)
				}
				if *before < 0 || *after < 100*time.Millisecond {
					return usagef("--before must be >= 0 and --after >= 100ms")
				}
				methods, err := benchMethods(*livemigModes, *peers)
				if err != nil {
					return err
				}
				if os.Geteuid() != 0 {
					return usagef("bench needs root: it mounts its own storage and migrates processes with ptrace")
				}
				self, ctx, stop, progress, err := benchStart(*asJSON)
				if err != nil {
					return err
				}
				defer stop()
				rep := &bench.Report{
					Benchmark: "downtime",
					Command:   "livemig " + strings.Join(os.Args[1:], " "),
					Date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
					Machine:   bench.ThisMachine(),
					FS:        *fstype,
					Repeat:    *repeat,
					Clock:     "CLOCK_MONOTONIC",
				}
				rep.Cases, err = bench.Downtime(ctx, bench.Config{
					Cases: cases, FS: *fstype, Repeat: *repeat, Methods: methods, Livemig: self,
					Before: *before, After: *after, Progress: progress,
				})
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: storage unmounted and workload stopped")
				}
				if err != nil {
					return err
				}
				return benchFinish(rep, "downtime", *asJSON, *markdown, *svg, func(w io.Writer) error {
					return bench.WriteSVG(w, "livemig bench downtime: write rate around the migration", rep.Panels())
				})
			}
		},
	})
}

// benchStart is what every benchmark needs before it runs: the livemig binary it
// drives, a context that Ctrl-C and SIGTERM end (call stop when done), and where
// progress goes (stderr when stdout carries the JSON).
func benchStart(asJSON bool) (self string, ctx context.Context, stop func(), progress io.Writer, err error) {
	self, err = os.Executable()
	if err != nil {
		return "", nil, nil, nil, fmt.Errorf("locate the livemig binary: %w", err)
	}
	ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	progress = os.Stdout
	if asJSON {
		progress = os.Stderr
	}
	return self, ctx, stop, progress, nil
}

// benchReport is the result of a benchmark, as every output needs it.
type benchReport interface {
	WriteText(io.Writer) error
	WriteMarkdown(io.Writer) error
}

// benchFinish writes a benchmark's outputs: the SVG (when svg is set), its section of
// the results page (when markdown is set), then the JSON or the table on stdout.
func benchFinish(rep benchReport, section string, asJSON bool, markdown, svg string, writeSVG func(io.Writer) error) error {
	if svg != "" {
		if err := writeFileWith(svg, writeSVG); err != nil {
			return err
		}
	}
	if markdown != "" {
		if err := bench.MergeMarkdown(markdown, section, rep.WriteMarkdown); err != nil {
			return err
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintln(os.Stdout)
	return rep.WriteText(os.Stdout)
}

// benchMethods turns --livemig and --peers into the list of methods, livemig's first.
func benchMethods(modes, peers []string) ([]string, error) {
	var methods []string
	for _, m := range modes {
		switch m {
		case "repoint":
			methods = append(methods, bench.MethodLivemig)
		case "remount":
			methods = append(methods, bench.MethodLivemigRemount)
		case "none":
		default:
			return nil, usagef("--livemig %q: want repoint, remount or none", m)
		}
	}
	for _, p := range peers {
		switch {
		case p == "none":
		case slices.Contains(bench.Peers, p):
			methods = append(methods, p)
		default:
			return nil, usagef("--peers %q: want %s or none", p, strings.Join(bench.Peers, ", "))
		}
	}
	if len(methods) == 0 {
		return nil, usagef("nothing to run: --livemig none and --peers none")
	}
	return slices.Compact(methods), nil
}

func checkShape(sh bench.Shape) error {
	switch {
	case sh.Procs < 1 || sh.Procs > 500:
		return usagef("--procs %d: want 1 to 500", sh.Procs)
	case sh.Files < 1 || sh.Files > 1000:
		return usagef("--files %d: want 1 to 1000", sh.Files)
	case sh.Threads < 1 || sh.Threads > sh.Files:
		return usagef("--threads %d: want 1 to --files (%d)", sh.Threads, sh.Files)
	case sh.Rate < 1 || sh.Rate > 100000:
		return usagef("--rate %d: want 1 to 100000 lines per second", sh.Rate)
	case sh.Size < 0 || sh.Size > 64<<30:
		return usagef("--size: want 0 to 64G")
	case sh.DirtyRate < 0 || sh.DirtyRate > 1<<30:
		return usagef("--dirty-rate: want 0 to 1G per second")
	}
	return nil
}

// parseCase parses PROCSxFILES[@RATE].
func parseCase(s string, base bench.Shape) (bench.Shape, error) {
	sh := base
	shape, rate, hasRate := strings.Cut(s, "@")
	p, f, ok := strings.Cut(shape, "x")
	if !ok {
		return sh, fmt.Errorf("want PROCSxFILES[@RATE]")
	}
	var err error
	if sh.Procs, err = strconv.Atoi(p); err != nil {
		return sh, fmt.Errorf("processes: %w", err)
	}
	if sh.Files, err = strconv.Atoi(f); err != nil {
		return sh, fmt.Errorf("files: %w", err)
	}
	if hasRate {
		if sh.Rate, err = strconv.Atoi(rate); err != nil {
			return sh, fmt.Errorf("rate: %w", err)
		}
	}
	sh.Threads = min(sh.Threads, sh.Files)
	return sh, nil
}

// parseBytes parses a size such as 512, 64K, 32M or 2G (powers of 1024).
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. 512, 64K, 32M, 2G)", s)
	}
	return n * mult, nil
}

// writeFileWith writes a file through a temporary name, so that a failure leaves no
// half-written file behind.
func writeFileWith(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	werr := write(f)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
