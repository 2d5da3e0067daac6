package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// rows is the table shared by the terminal and Markdown outputs.
func (r *SyncReport) rows() [][]string {
	out := [][]string{{"work", "tool", "median", "min–max", "livemig faster by", "target (livemig) / notes"}}
	timeout := time.Duration(r.LagTimeoutNS)
	for _, row := range r.Rows {
		var base *SyncResult
		if len(row.Results) > 0 && row.Results[0].Tool == ToolLivemig && row.Results[0].Runs > 0 {
			base = row.Results[0]
		}
		for _, res := range row.Results {
			cells := []string{row.Work, res.Tool}
			var notes []string
			if res.Tool == ToolLivemig {
				notes = append(notes, "target: "+row.Target)
			}
			if res.Skipped != "" {
				out = append(out, append(cells, "skipped", "", "", strings.Join(append(notes, res.Skipped), "; ")))
				continue
			}
			if len(res.Errors) > 0 {
				notes = append(notes, fmt.Sprintf("%d run(s) failed: %s", len(res.Errors), res.Errors[0]))
			}
			if res.Missed > 0 {
				notes = append(notes, fmt.Sprintf("%d change(s) not at DST after %s", res.Missed, timeout))
			}
			notes = append(notes, res.Notes...)
			if res.Runs == 0 {
				out = append(out, append(cells, "-", "", "", strings.Join(notes, "; ")))
				continue
			}
			median, span := resultCells(row, res, timeout)
			ratio := ""
			if base != nil && res != base {
				ratio = ratioCell(primary(row, base), primary(row, res), timeout)
			}
			out = append(out, append(cells, median, span, ratio, strings.Join(notes, "; ")))
		}
	}
	return out
}

func isLag(row *SyncRow) bool { return strings.HasPrefix(row.Key, "lag-") }

// primary is the figure a row compares: the wall time, or the median lag.
func primary(row *SyncRow, res *SyncResult) int64 {
	if isLag(row) {
		return res.LagP50.Median
	}
	return res.Time.Median
}

// ratioCell is how many times longer the peer took than livemig.
func ratioCell(livemig, peer int64, timeout time.Duration) string {
	switch {
	case livemig <= 0:
		return ""
	case peer == lagMissed:
		return fmt.Sprintf("> %.0fx", float64(timeout)/float64(livemig))
	}
	return fmt.Sprintf("%.1fx", float64(peer)/float64(livemig))
}

func secs(ns int64) string { return fmt.Sprintf("%.3f s", float64(ns)/1e9) }

func resultCells(row *SyncRow, res *SyncResult, timeout time.Duration) (median, span string) {
	lw := func(ns int64) string { return lagWord(ns, timeout) }
	rng := func(s Stats, word func(int64) string) string {
		if s.Min == s.Max {
			return word(s.Min)
		}
		return word(s.Min) + "–" + word(s.Max)
	}
	switch row.Key {
	case RowLagSmall:
		return fmt.Sprintf("p50 %s, p99 %s", lw(res.LagP50.Median), lw(res.LagP99.Median)),
			"p50 " + rng(res.LagP50, lw)
	case RowLagAppend:
		return fmt.Sprintf("p50 %s, max %s", lw(res.LagP50.Median), lw(res.LagMax.Median)),
			"p50 " + rng(res.LagP50, lw)
	case RowLagBurst:
		return lw(res.LagP50.Median), rng(res.LagP50, lw)
	}
	median = secs(res.Time.Median)
	if res.PerSec > 0 {
		median += fmt.Sprintf(", %.0f %s", res.PerSec, row.Unit)
	}
	if row.Key == RowDelta {
		median += ", " + bytesWord(res.BytesWritten) + " written"
	}
	return median, rng(res.Time, secs)
}

func bytesWord(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (r *SyncReport) legend() string {
	return fmt.Sprintf(`- **median (min–max)** over %d run(s) of each tool (the tools take turns within each run, after one untimed warm-up copy); copy rows: the tool's wall time, from start to exit.
- **livemig faster by**: the peer's median divided by livemig's (wall time; for lag rows the median lag).
- **second pass**: DST made identical first (exact times); every tool then finds nothing to copy. cp -a has no such mode.
- **written**: bytes written at DST, from each tool's own report: livemig's bytes_written; rsync --inplace: its literal data (matching blocks are skipped); rsync -a writes a new copy of the file. Each change also moves the file's mtime by a whole second (rsync compares whole seconds by default).
- **follow lag**: a running mirror; a change is written at SRC and DST is polled (every 0.1 ms) until it holds the same bytes. Small files: the writer keeps its rate whatever the mirror does; p50/p99 over the files of a run. Append: one append at a time, once DST has caught up. Burst: from the first write until the last file is at DST.
- **lsyncd**: default.rsync with rsync archive = true; "delay 15 s" is its default delay, measured in one run capped at %s per change; "delay = 0" is lsyncd at its fastest.
`, r.Repeat, time.Duration(r.LagTimeoutNS))
}

// WriteText prints the table for a terminal.
func (r *SyncReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range r.rows() {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s, %s, %d core(s), %s, repeat %d\n%s", r.FS, r.Machine.CPU, r.Machine.Cores, r.Machine.Kernel, r.Repeat, r.legend())
	return err
}

// WriteMarkdown writes the sync section of the results page.
func (r *SyncReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# livemig bench sync\n\n")
	fmt.Fprintf(&b, "Measured %s on %s (%d cores, %d MiB, Linux %s, %s); both trees on %s, repeat %d.\n\n",
		r.Date, r.Machine.CPU, r.Machine.Cores, r.Machine.MemMiB, r.Machine.Kernel, r.Machine.Go, storageWord(r.FS), r.Repeat)
	fmt.Fprintf(&b, "Command:\n\n```sh\n%s\n```\n\n", r.Command)
	writeMarkdownTable(&b, r.rows())
	b.WriteString("\n" + r.legend())
	for _, n := range r.Notes {
		b.WriteString("- " + n + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func storageWord(fs string) string {
	if fs == "tmpfs" {
		return "tmpfs"
	}
	return "loop-mounted " + fs
}

func writeMarkdownTable(b *strings.Builder, rows [][]string) {
	for i, row := range rows {
		cells := make([]string, len(row))
		for j, c := range row {
			cells[j] = strings.ReplaceAll(c, "|", `\|`)
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
		if i == 0 {
			b.WriteString(strings.Repeat("|---", len(row)) + "|\n")
		}
	}
}

// WriteSVG draws the distribution of the small-file follow lag: for each mirror, the
// share of files at DST (y) within a given lag (x, logarithmic).
func (r *SyncReport) WriteSVG(w io.Writer) error {
	const width, height, left, right, top, bottom = 900, 420, 70, 30, 50, 60
	// one curve per mirror: its changes that arrived, sorted, out of every change written
	type curve struct {
		name  string
		lat   []int64
		total int
	}
	var curves []curve
	lo, hi := math.Inf(1), 0.0
	for _, row := range r.Rows {
		if row.Key != RowLagSmall {
			continue
		}
		for _, res := range row.Results {
			if len(res.Samples) == 0 {
				continue
			}
			c := curve{name: res.Tool, total: len(res.Samples)}
			for _, l := range res.Samples {
				if l > 0 {
					c.lat = append(c.lat, l)
					lo, hi = math.Min(lo, float64(l)/1e6), math.Max(hi, float64(l)/1e6)
				}
			}
			slices.Sort(c.lat)
			curves = append(curves, c)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	title := "livemig bench sync: follow lag of new small files"
	for _, row := range r.Rows {
		if row.Key == RowLagSmall {
			title = "livemig bench sync: " + row.Work
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(title))
	pw, ph := float64(width-left-right), float64(height-top-bottom)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", left, top, pw, ph)
	if len(curves) == 0 || hi <= 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no follow-lag samples in this run</text>`+"\n</svg>\n", left+10, top+20)
		_, err := io.WriteString(w, b.String())
		return err
	}
	// decades from below the fastest to above the slowest change
	d0, d1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if d1 <= d0 {
		d1 = d0 + 1
	}
	xOf := func(msv float64) float64 {
		return float64(left) + (math.Log10(msv)-d0)/(d1-d0)*pw
	}
	yOf := func(share float64) float64 { return float64(top) + ph - share*ph }
	for d := d0; d <= d1; d++ {
		x := xOf(math.Pow(10, d))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f" stroke="#eee"/>`+"\n", x, top, x, float64(top)+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s ms</text>`+"\n", x, float64(top)+ph+16, trimFloat(math.Pow(10, d)))
	}
	for _, s := range []float64{0, 0.25, 0.5, 0.75, 0.9, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/>`+"\n", left, yOf(s), float64(left)+pw, yOf(s))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n", left-4, yOf(s)+4, s*100)
	}
	colors := []string{"#1565c0", "#d32f2f", "#2e7d32", "#f9a825", "#6a1b9a"}
	for i, c := range curves {
		total := c.total
		var pts strings.Builder
		for j, l := range c.lat {
			fmt.Fprintf(&pts, "%.1f,%.1f ", xOf(float64(l)/1e6), yOf(float64(j+1)/float64(total)))
		}
		color := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"><title>%s</title></polyline>`+"\n", color, strings.TrimSpace(pts.String()), esc(c.name))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%d" width="12" height="3" fill="%s"/><text x="%.0f" y="%d">%s (%d files, %d missed)</text>`+"\n",
			float64(left)+10, top+14+16*i, color, float64(left)+26, top+18+16*i, esc(c.name), total, total-len(c.lat))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">share of the files written at SRC that are identical at DST (y) within a lag (x, log scale); every run</text>`+"\n", left, height-12)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func trimFloat(f float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", f), "0"), ".")
}

// Section markers of the results page: each benchmark owns its section, so that
// `bench downtime` and `bench sync` write one page between them.
func sectionMarkers(name string) (begin, end string) {
	return "<!-- livemig bench " + name + " -->", "<!-- end livemig bench " + name + " -->"
}

// MergeMarkdown writes the section name of the results page at path: it replaces that
// section if the page has it, appends it otherwise, and keeps every other section. A page
// written before sections existed (the downtime table alone) becomes the downtime section.
// The page is replaced through a temporary file.
func MergeMarkdown(path, name string, write func(io.Writer) error) error {
	var body strings.Builder
	if err := write(&body); err != nil {
		return fmt.Errorf("render the %s section: %w", name, err)
	}
	oldData, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	page := MergeSection(string(oldData), name, body.String())
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(page), 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}

// MergeSection is page with the section name set to body (see MergeMarkdown).
func MergeSection(page, name, body string) string {
	if page != "" && !strings.Contains(page, "<!-- livemig bench ") && strings.HasPrefix(page, "# livemig bench downtime") {
		b, e := sectionMarkers("downtime")
		page = b + "\n" + strings.TrimRight(page, "\n") + "\n" + e + "\n"
	}
	begin, end := sectionMarkers(name)
	block := begin + "\n" + strings.TrimRight(body, "\n") + "\n" + end + "\n"
	if i := strings.Index(page, begin); i >= 0 {
		if j := strings.Index(page[i:], end); j >= 0 {
			rest := strings.TrimPrefix(page[i+j+len(end):], "\n")
			return page[:i] + block + rest
		}
	}
	if page == "" {
		return block
	}
	return strings.TrimRight(page, "\n") + "\n\n" + block
}
