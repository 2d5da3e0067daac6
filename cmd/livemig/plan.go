package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
	livesync "github.com/livemig/livemig/sync"
)

func init() {
	register(&command{
		name:    "plan",
		summary: "show what a cutover of SRC would touch, and what it cannot move",
		usage: `plan [--json] [--pid PID,...] SRC [DST]

Lists every process whose open files, working directory, root, executable or file
mappings lie under SRC: per process its fds (kind, flags, offset), cwd, mappings, and
the leftovers a cutover could not move, with the reason. Nothing is stopped or changed.
Needs root. Exit 0 also when there are leftovers: plan only reports.

It also predicts the pause a cutover would cause now: a cost per process, thread and
item to move, plus the final delta (what a running mirror of SRC reports dirty, found
through its status file, and the files open for writing, which are read whole in the
pause). With DST, only a mirror to DST counts. See README, "Predicting the pause".

Examples:
  livemig plan /srv/data
  livemig plan /srv/data /mnt/new/data
  livemig plan --json --pid 1234 /srv/data`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			asJSON := fs.Bool("json", false, "print the result as JSON on stdout")
			pids := fs.IntSlice("pid", nil, "only these processes (and all their threads); repeatable or comma-separated")
			return func(args []string) error {
				if len(args) != 1 && len(args) != 2 {
					return usagef("plan takes SRC and optionally DST (got %d arguments)", len(args))
				}
				dst := ""
				if len(args) == 2 {
					dst = args[1]
				}
				d, err := discoverForPlan(args[0], *pids)
				if err != nil {
					return err
				}
				lag, from := runningMirrorLag(args[0], dst)
				pred := predictPause(d, lag, from)
				if *asJSON {
					return writePlanJSON(os.Stdout, d, pred)
				}
				writePlanText(os.Stdout, d)
				writePrediction(os.Stdout, pred)
				return nil
			}
		},
	})
}

// discoverForPlan checks the input, then discovers. Everything the user can fix by
// changing the command line is a usage error (exit 2).
func discoverForPlan(src string, pids []int) (*cutover.Discovery, error) {
	if os.Geteuid() != 0 {
		return nil, usagef("plan needs root: it reads every process's open files and mappings in /proc")
	}
	if fi, err := os.Stat(src); err != nil {
		return nil, usagef("source %s: %v", src, errors.Unwrap(err))
	} else if !fi.IsDir() {
		return nil, usagef("source %s: not a directory", src)
	}
	d, err := cutover.Discover(src, cutover.Options{PIDs: pids})
	var noProc *cutover.NoSuchProcessError
	var notUsing *cutover.NotUsingSourceError
	if errors.As(err, &noProc) || errors.As(err, &notUsing) {
		return nil, usagef("--pid: %v", err)
	}
	return d, err
}

// planJSON is plan's --json document.
type planJSON struct {
	*cutover.Discovery
	Summary        planSummary     `json:"summary"`
	PredictedPause pausePrediction `json:"predicted_pause"`
}

type planSummary struct {
	Processes int `json:"processes"`
	Items     int `json:"items"`
	Leftovers int `json:"leftovers"`
}

func summarize(d *cutover.Discovery) planSummary {
	s := planSummary{Processes: len(d.Processes)}
	for _, p := range d.Processes {
		s.Items += len(p.FDs) + len(p.Maps) + len(p.Cwd) + len(p.Root)
		if p.Exe != nil {
			s.Items++
		}
		s.Leftovers += len(p.Leftovers)
	}
	return s
}

func writePlanJSON(w io.Writer, d *cutover.Discovery, pred pausePrediction) error {
	if d.Processes == nil {
		d.Processes = []cutover.Process{} // "processes": [] rather than null
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(planJSON{Discovery: d, Summary: summarize(d), PredictedPause: pred})
}

func writePlanText(w io.Writer, d *cutover.Discovery) {
	s := d.Source
	where := "directory on"
	if s.MountPoint {
		where = "mount point of"
	}
	fmt.Fprintf(w, "source %s (%s %s, device %d:%d)\n", quotePath(s.Path), where, s.FSType, unix.Major(s.Dev), unix.Minor(s.Dev))
	for _, p := range d.Processes {
		fmt.Fprintf(w, "\npid %d %s (ppid %d, state %s, %d thread(s)): %s\n",
			p.PID, p.Comm, p.PPID, p.State, len(p.Threads), strings.Join(p.Cmdline, " "))
		for _, l := range append(append([]cutover.Location{}, p.Cwd...), p.Root...) {
			fmt.Fprintf(w, "  %-6s %s%s\n", l.Kind, quotePath(l.Path), taskNote(p.PID, l.TID))
		}
		if p.Exe != nil {
			fmt.Fprintf(w, "  %-6s %s\n", "exe", quotePath(p.Exe.Path))
		}
		for _, fd := range p.FDs {
			fmt.Fprintf(w, "  fd %-3d %-7s %s  %s", fd.Num, fd.Kind, quotePath(fd.Path), cutover.FlagNames(fd.Flags))
			if fd.CloseOnExec {
				fmt.Fprint(w, "|O_CLOEXEC")
			}
			fmt.Fprintf(w, "  pos %d%s\n", fd.Pos, taskNote(p.PID, fd.TID))
		}
		for _, m := range p.Maps {
			fmt.Fprintf(w, "  map    %x-%x %s off %#x %s %s", m.Start, m.End, m.Perms, m.Offset, m.Kind, quotePath(m.Path))
			if m.WrittenBytes > 0 {
				fmt.Fprintf(w, "  (%d bytes written)", m.WrittenBytes)
			}
			fmt.Fprintln(w)
		}
		for _, l := range p.Leftovers {
			fmt.Fprintf(w, "  LEFTOVER %s %s: %s\n", l.What, quotePath(l.Path), l.Reason)
		}
	}
	if len(d.Unreadable) > 0 {
		fmt.Fprintln(w)
	}
	for _, u := range d.Unreadable {
		fmt.Fprintf(w, "UNREADABLE pid %d %s: %s (whether it uses the source is unknown)\n", u.PID, u.Comm, u.Error)
	}
	sum := summarize(d)
	fmt.Fprintf(w, "\n%d process(es), %d item(s) under the source, %d leftover(s)\n", sum.Processes, sum.Items, sum.Leftovers)
}

// quotePath shows a path on one line: names may hold newlines or other control bytes.
func quotePath(p string) string {
	for _, r := range p {
		if r < ' ' || r == 0x7f {
			return fmt.Sprintf("%q", p)
		}
	}
	return p
}

func taskNote(pid, tid int) string {
	if tid == pid || tid == 0 {
		return ""
	}
	return fmt.Sprintf("  (thread %d)", tid)
}

func writePrediction(w io.Writer, p pausePrediction) {
	if p.Processes == 0 {
		fmt.Fprintln(w, "predicted pause: none (no process to freeze)")
		return
	}
	fmt.Fprintf(w, "predicted pause: %v = %v for %d process(es), %d thread(s), %d item(s) + %v final delta\n",
		time.Duration(p.PauseNs).Round(10*time.Microsecond), time.Duration(p.OverheadNs).Round(10*time.Microsecond),
		p.Processes, p.Threads, p.Items, time.Duration(p.DeltaNs).Round(10*time.Microsecond))
	fmt.Fprintf(w, "  final delta: %d dirty path(s), %s (%s); %d file(s) open for writing, %s, read whole in the pause\n",
		p.DirtyPaths, human(p.DirtyBytes), p.DirtyFrom, p.ForcedPaths, human(p.ForcedBytes))
}

// runningMirrorLag finds the dirty state of a sync or migrate running from src (to dst,
// if given) through its status file; the second result says where it came from.
func runningMirrorLag(src, dst string) (*livesync.Lag, string) {
	same := func(a, b string) bool {
		ra, err1 := filepath.EvalSymlinks(a)
		rb, err2 := filepath.EvalSymlinks(b)
		return err1 == nil && err2 == nil && ra == rb
	}
	paths, _ := filepath.Glob(filepath.Join(statusDir, "*.json"))
	for _, p := range paths {
		d, err := readStatus(p)
		if err != nil || !d.Running || d.Lag == nil || !same(d.Src, src) || (dst != "" && !same(d.Dst, dst)) {
			continue
		}
		return d.Lag, fmt.Sprintf("running %s, pid %d, status file %s", d.Command, d.PID, p)
	}
	return nil, "no running mirror found: counted as a converged one"
}
