package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	livesync "github.com/livemig/livemig/sync"
)

// statusDir is where a running sync or migrate writes its status file by default.
const statusDir = "/run/livemig"

// statusDoc is the status file's content, and `livemig status --json` output.
type statusDoc struct {
	Command          string         `json:"command"` // sync or migrate
	PID              int            `json:"pid"`
	Running          bool           `json:"running"` // filled in by the reader: is PID still that process?
	Src              string         `json:"src"`
	Dst              string         `json:"dst"`
	Phase            string         `json:"phase"`
	Detail           string         `json:"detail,omitempty"`
	Started          time.Time      `json:"started"`
	PhaseSince       time.Time      `json:"phase_since"`
	Updated          time.Time      `json:"updated"`
	FirstPass        *passProgress  `json:"first_pass,omitempty"`
	Lag              *livesync.Lag  `json:"lag,omitempty"`
	Rates            Rates          `json:"rates"`
	EstimatedPauseNs int64          `json:"estimated_pause_ns"`
	BudgetNs         int64          `json:"budget_ns,omitempty"`
	ThrottleShare    float64        `json:"throttle_share,omitempty"`
	Attempt          int            `json:"attempt,omitempty"`
	Stats            livesync.Stats `json:"stats"`
	Errors           []string       `json:"errors,omitempty"`
}

// passProgress is the first pass so far, against the total counted beside it.
type passProgress struct {
	EntriesDone   int64   `json:"entries_done"`
	EntriesTotal  int64   `json:"entries_total"`
	BytesDone     int64   `json:"bytes_done"` // read from SRC (identical files are skipped, unread)
	BytesTotal    int64   `json:"bytes_total"`
	Counting      bool    `json:"counting"` // the totals are still being counted
	EntriesPerSec float64 `json:"entries_per_sec"`
	BytesPerSec   float64 `json:"bytes_per_sec"`
	ETANs         int64   `json:"eta_ns"`
}

// defaultStatusPath names the status file of a command mirroring to dst: one per
// destination, so that `livemig status` finds every running mirror, and a restarted
// one replaces its predecessor's file.
func defaultStatusPath(command, dst string) string {
	abs, err := filepath.Abs(dst)
	if err != nil {
		abs = dst
	}
	name := strings.Trim(strings.ReplaceAll(filepath.Clean(abs), "/", "-"), "-")
	if name == "" {
		name = "root"
	}
	return filepath.Join(statusDir, command+"-"+name+".json")
}

// statusFile writes the status atomically (temporary file, then rename), so that a
// reader never sees half a document. A failure to write is logged once and then the
// file is given up on: the status is a convenience, never a reason to stop a mirror.
type statusFile struct {
	path   string
	log    *slog.Logger
	mu     sync.Mutex
	failed bool
}

func newStatusFile(path string, explicit bool, log *slog.Logger) *statusFile {
	sf := &statusFile{path: path, log: log}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		if explicit {
			log.Warn("no status file", "path", path, "err", err)
		}
		sf.failed = true // e.g. not root and the default under /run: stay quiet
	}
	return sf
}

func (sf *statusFile) write(d statusDoc) {
	if sf == nil {
		return
	}
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if sf.failed {
		return
	}
	data, err := json.MarshalIndent(d, "", "  ")
	if err == nil {
		err = writeAtomic(sf.path, append(data, '\n'))
	}
	if err != nil {
		sf.log.Warn("cannot write the status file; giving up on it", "path", sf.path, "err", err)
		sf.failed = true
	}
}

// writeAtomic replaces path with data: a reader sees the old or the new content whole.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func init() {
	register(&command{
		name:    "status",
		summary: "show the state of a running sync or migrate (phase, lag, dirty, rates, estimated pause)",
		usage: `status [--status-file FILE] [--json]

Reads the status file that a running 'livemig sync' or 'livemig migrate' rewrites twice a
second (by default one per destination under ` + statusDir + `/). Without --status-file,
every status file there is shown. Nothing is stopped or changed.

Examples:
  livemig status
  livemig status --json --status-file /run/livemig/migrate-mnt-new-data.json

With --status-file, --json prints one object; without, a list of them.
Exit status: 0 shown; 1 no status file found or unreadable; 2 bad usage.`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			file := fs.String("status-file", "", "the status file to read (default: all under "+statusDir+")")
			asJSON := fs.Bool("json", false, "print the status as JSON on stdout")
			return func(args []string) error {
				if len(args) != 0 {
					return usagef("status takes no arguments (got %d)", len(args))
				}
				return runStatus(os.Stdout, *file, *asJSON)
			}
		},
	})
}

func runStatus(w io.Writer, file string, asJSON bool) error {
	paths := []string{file}
	if file == "" {
		var err error
		paths, err = filepath.Glob(filepath.Join(statusDir, "*.json"))
		if err != nil || len(paths) == 0 {
			return fmt.Errorf("no status file in %s: no sync or migrate has run since boot (or give --status-file)", statusDir)
		}
		sort.Strings(paths)
	}
	docs := make([]statusDoc, 0, len(paths))
	for _, p := range paths {
		d, err := readStatus(p)
		if err != nil {
			return err
		}
		docs = append(docs, d)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if file != "" {
			return enc.Encode(docs[0])
		}
		return enc.Encode(docs)
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		writeStatusText(w, d)
	}
	return nil
}

func readStatus(path string) (statusDoc, error) {
	var d statusDoc
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, fmt.Errorf("status file %s does not exist (is a sync or migrate running with that --status-file?)", path)
	}
	if err != nil {
		return d, fmt.Errorf("status file: %w", err)
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("status file %s: not a livemig status: %w", path, err)
	}
	d.Running = alive(d.PID, d.Command)
	return d, nil
}

// alive reports whether pid is still a livemig running command (not a reused pid).
func alive(pid int, command string) bool {
	if pid <= 0 || unix.Kill(pid, 0) == unix.ESRCH {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return true // not ours to read, but it exists
	}
	return strings.Contains(string(cmdline), "\x00"+command+"\x00") || strings.HasSuffix(string(cmdline), "\x00"+command)
}

func writeStatusText(w io.Writer, d statusDoc) {
	state := "running"
	if !d.Running {
		state = "not running"
	}
	fmt.Fprintf(w, "%s %s -> %s (pid %d, %s, started %s)\n", d.Command, d.Src, d.Dst, d.PID, state, d.Started.Format(time.DateTime))
	fmt.Fprintf(w, "  phase:   %s", d.Phase)
	if d.Detail != "" {
		fmt.Fprintf(w, " (%s)", d.Detail)
	}
	fmt.Fprintf(w, " for %v; updated %v ago\n", d.Updated.Sub(d.PhaseSince).Round(time.Second), time.Since(d.Updated).Round(time.Second))
	if p := d.FirstPass; p != nil {
		fmt.Fprintf(w, "  first pass: %d of %d entries, %s of %s read, %s/s, ETA %v\n", p.EntriesDone, p.EntriesTotal,
			human(p.BytesDone), human(p.BytesTotal), human(int64(p.BytesPerSec)), time.Duration(p.ETANs).Round(time.Second))
	}
	if l := d.Lag; l != nil {
		fmt.Fprintf(w, "  lag:     oldest unsynced change %v; dirty %d paths, %s\n", l.Oldest.Round(time.Millisecond), l.DirtyPaths, human(l.DirtyBytes))
		fmt.Fprintf(w, "  rates:   changes %.0f paths/s %s/s; copied %.0f paths/s %s/s\n", d.Rates.DirtyPathsPerSec,
			human(int64(d.Rates.DirtyBytesPerSec)), d.Rates.CopyPathsPerSec, human(int64(d.Rates.CopyBytesPerSec)))
		fmt.Fprintf(w, "  estimated pause now: %v", time.Duration(d.EstimatedPauseNs).Round(10*time.Microsecond))
		if d.BudgetNs > 0 {
			fmt.Fprintf(w, " (budget %v)", time.Duration(d.BudgetNs))
		}
		fmt.Fprintln(w)
	}
	if d.ThrottleShare > 0 {
		fmt.Fprintf(w, "  throttle: writers stopped %.0f%% of the time\n", 100*d.ThrottleShare)
	}
	s := d.Stats
	fmt.Fprintf(w, "  totals:  %d files copied, %s written, %d deleted, %d renamed, %d problems\n",
		s.FilesCopied, human(s.BytesWritten), s.Deleted, s.Renamed, s.Problems)
	for _, e := range d.Errors {
		fmt.Fprintf(w, "  error:   %s\n", e)
	}
}
