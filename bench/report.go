package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// Report is the whole result of `livemig bench downtime`, as --json prints it.
type Report struct {
	Benchmark string        `json:"benchmark"` // "downtime"
	Command   string        `json:"command"`
	Date      string        `json:"date"`
	Machine   Machine       `json:"machine"`
	FS        string        `json:"fs"`
	Repeat    int           `json:"repeat"`
	Clock     string        `json:"clock"`
	Cases     []*CaseResult `json:"cases"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	MemMiB int64  `json:"mem_mib"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// ThisMachine reads the CPU model, core count, memory and kernel release.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), CPU: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemMiB = int64(si.Totalram) * int64(si.Unit) >> 20
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// baseline is the livemig method a peer is compared with: the re-pointing cutover for
// the gdb recipe, the remounting one for seed 001; the other one if that did not run.
func baseline(cr *CaseResult, method string) *MethodResult {
	want, other := MethodLivemig, MethodLivemigRemount
	if remounts(method) {
		want, other = other, want
	}
	var fallback *MethodResult
	for _, mr := range cr.Methods {
		if mr.Skipped != "" || mr.Pause.N == 0 {
			continue
		}
		switch mr.Method {
		case want:
			return mr
		case other:
			fallback = mr
		}
	}
	return fallback
}

func statCell(s Stats) string {
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return msShort(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", msShort(s.Median), msShort(s.Min), msShort(s.Max))
}

func msShort(ns int64) string {
	f := float64(ns) / 1e6
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f ms", f)
	case f >= 10:
		return fmt.Sprintf("%.1f ms", f)
	}
	return fmt.Sprintf("%.2f ms", f)
}

// rows is the table shared by the terminal and Markdown outputs.
func (r *Report) rows() [][]string {
	head := []string{"procs x files @lines/s", "method", "pause median (min–max)", "total", "integrity", "control gap", "pause vs livemig", "notes"}
	out := [][]string{head}
	for _, cr := range r.Cases {
		name := fmt.Sprintf("%d x %d @%d/s", cr.Shape.Procs, cr.Shape.Files, cr.Shape.Rate)
		for _, mr := range cr.Methods {
			row := []string{name, mr.Method}
			if mr.Skipped != "" {
				row = append(row, "skipped", "", "", statCell(cr.ControlGap), "", mr.Skipped)
				out = append(out, row)
				continue
			}
			integ := fmt.Sprintf("%d/%d ok", mr.IntegrityOK, len(mr.Runs)-mr.Errors)
			if mr.IntegrityOK < len(mr.Runs)-mr.Errors {
				integ += " (" + integrityWhy(mr) + ")"
			}
			ratio := ""
			if b := baseline(cr, mr.Method); b != nil && b != mr && b.Pause.Median > 0 {
				ratio = fmt.Sprintf("%.0fx %s", float64(mr.Pause.Median)/float64(b.Pause.Median), b.Method)
			}
			var notes []string
			if mr.Errors > 0 {
				for _, run := range mr.Runs {
					if run.Error != "" {
						notes = append(notes, fmt.Sprintf("%d run(s) failed: %s", mr.Errors, firstLine(run.Error, 120)))
						break
					}
				}
			}
			for _, run := range mr.Runs {
				for _, n := range run.Notes {
					if len(notes) < 3 && !slices.Contains(notes, n) {
						notes = append(notes, n)
					}
				}
			}
			row = append(row, statCell(mr.Pause), statCell(mr.Total), integ, statCell(cr.ControlGap), ratio, strings.Join(notes, "; "))
			out = append(out, row)
		}
	}
	return out
}

// integrityWhy summarises, over the runs, what broke integrity.
func integrityWhy(mr *MethodResult) string {
	var sum Integrity
	for _, run := range mr.Runs {
		if run.Error == "" && !run.IntegrityOK {
			sum.Add(run.Integrity)
		}
	}
	var why []string
	if sum.AfterOnOld > 0 {
		why = append(why, fmt.Sprintf("%d lines after the cutover went to the old storage", sum.AfterOnOld))
	}
	if sum.MissingOnNew > 0 {
		why = append(why, fmt.Sprintf("%d missing on the new", sum.MissingOnNew))
	}
	for _, c := range []struct {
		n    int64
		what string
	}{{sum.Lost, "lost"}, {int64(sum.Doubled), "doubled"}, {int64(sum.OutOfOrder), "out of order"}, {int64(sum.Torn), "torn"}} {
		if c.n > 0 {
			why = append(why, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(why) == 0 {
		return "files missing or no line after the cutover"
	}
	return strings.Join(why, ", ")
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// WriteText prints the table for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range r.rows() {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\npause = largest gap between consecutive lines of a workload file around the migration (its own CLOCK_MONOTONIC stamps), worst process; control gap = largest gap of the same workload with no migration; %s, %s, %d core(s), %s, repeat %d\n",
		r.FS, r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Repeat)
	return err
}

// WriteMarkdown writes the results page: the table, the machine, the date, the command.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# livemig bench downtime\n\n")
	fmt.Fprintf(&b, "Measured %s on %s (%d cores, %d MiB, Linux %s, %s); storage: loop-mounted %s (old and new), repeat %d.\n\n",
		r.Date, r.Machine.CPU, r.Machine.Cores, r.Machine.MemMiB, r.Machine.Kernel, r.Machine.Go, r.FS, r.Repeat)
	fmt.Fprintf(&b, "Command:\n\n```sh\n%s\n```\n\n", r.Command)
	writeMarkdownTable(&b, r.rows())
	b.WriteString(`
- **pause**: per process, the largest gap between consecutive lines of its files that overlaps
  the migration (for livemig: the gap spanning its freeze..resume instants), from the workload's
  own CLOCK_MONOTONIC stamps; the worst process of the run; median (min–max) over the repeats.
  A line is written every 1/rate s, so a gap includes up to one period of the rate.
- **total**: the whole migration, pre-copy included (livemig: ` + "`sync --once`" + ` + cutover; gdb: ` + "`cp -a`" + ` + one gdb per
  process, one after another; rsync-remount: SIGSTOP .. rsync .. remount .. SIGCONT .. gdb chdir per process).
- **integrity**: every line on the new storage exactly once, in order, complete, and the lines
  written after the migration on the new storage, none on the old one.
- **control gap**: the largest gap of the same workload with no migration (scheduler jitter).
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// Panels are the SVG's plots: the first run of every method of every case.
func (r *Report) Panels() []Panel {
	var ps []Panel
	for _, cr := range r.Cases {
		for _, mr := range cr.Methods {
			for _, run := range mr.Runs {
				if run.Error != "" || run.Timeline == nil {
					continue
				}
				ps = append(ps, Panel{
					Title: fmt.Sprintf("%d x %d files @%d/s — %s: pause %s, migration %s (control gap %s)",
						cr.Shape.Procs, cr.Shape.Files, cr.Shape.Rate, mr.Method, msShort(run.PauseNS), msShort(run.TotalNS), statCell(cr.ControlGap)),
					T: run.Timeline,
				})
				break
			}
		}
	}
	return ps
}
