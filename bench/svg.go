package bench

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// Timeline is the write rate of one run's workload around its migration: lines per
// bin, every file of every writer together. Times are ns relative to StartNS, the start
// of the migration (CLOCK_MONOTONIC).
type Timeline struct {
	StartNS int64      `json:"start_ns"`
	EndNS   int64      `json:"end_ns"`  // end of the migration, relative
	FromNS  int64      `json:"from_ns"` // first bin's start, relative (negative)
	BinNS   int64      `json:"bin_ns"`
	Counts  []int      `json:"counts"`
	Pauses  [][2]int64 `json:"pauses"` // each process's pause gap, relative
}

const timelineBins = 150

func newTimeline(start, end int64) *Timeline {
	d := end - start
	pad := max(d/4, 200e6)
	from, to := -pad, d+pad
	bin := max((to-from)/timelineBins, 1)
	return &Timeline{StartNS: start, EndNS: d, FromNS: from, BinNS: bin, Counts: make([]int, timelineBins)}
}

func (t *Timeline) add(l Log) {
	for _, ln := range l.Lines {
		i := (ln.NS - t.StartNS - t.FromNS) / t.BinNS
		if i >= 0 && i < int64(len(t.Counts)) {
			t.Counts[i]++
		}
	}
}

// Panel is one plot of the SVG: a titled timeline.
type Panel struct {
	Title string
	T     *Timeline
}

// WriteSVG draws one panel per timeline, stacked: the write rate (lines/s) over time,
// the migration's span shaded grey and every process's pause gap shaded red.
func WriteSVG(w io.Writer, title string, panels []Panel) error {
	const width, ph, left, right, top, gapY = 900, 150, 70, 20, 40, 50
	height := top + len(panels)*(ph+gapY) + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(title))
	pw := float64(width - left - right)
	for i, p := range panels {
		y0 := float64(top + i*(ph+gapY) + 15)
		t := p.T
		fmt.Fprintf(&b, `<g>`+"\n"+`<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", left, y0-4, esc(p.Title))
		if t == nil || len(t.Counts) == 0 {
			fmt.Fprintf(&b, `<text x="%d" y="%.0f">no data</text></g>`+"\n", left, y0+20)
			continue
		}
		span := float64(t.BinNS) * float64(len(t.Counts))
		xOf := func(rel int64) float64 {
			x := float64(left) + (float64(rel-t.FromNS)/span)*pw
			return min(max(x, float64(left)), float64(left)+pw)
		}
		peak := 1
		for _, c := range t.Counts {
			peak = max(peak, c)
		}
		rate := func(c int) float64 { return float64(c) / (float64(t.BinNS) / 1e9) }
		yOf := func(c int) float64 { return y0 + ph - float64(c)/float64(peak)*(ph-10) }
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#888"/>`+"\n", left, y0, pw, ph)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#ddd" fill-opacity="0.6"><title>migration %s</title></rect>`+"\n",
			xOf(0), y0, max(xOf(t.EndNS)-xOf(0), 1), ph, ms(t.EndNS))
		for _, pz := range t.Pauses {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#d33" fill-opacity="0.35"><title>pause %s</title></rect>`+"\n",
				xOf(pz[0]), y0, max(xOf(pz[1])-xOf(pz[0]), 1), ph, ms(pz[1]-pz[0]))
		}
		var pts strings.Builder
		for j, c := range t.Counts {
			x0 := xOf(t.FromNS + int64(j)*t.BinNS)
			x1 := xOf(t.FromNS + int64(j+1)*t.BinNS)
			fmt.Fprintf(&pts, "%.1f,%.1f %.1f,%.1f ", x0, yOf(c), x1, yOf(c))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#1565c0" stroke-width="1.2" points="%s"/>`+"\n", strings.TrimSpace(pts.String()))
		// axes: rate at the top and zero, time at both ends and at the migration's start
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f/s</text>`+"\n", left-4, y0+14, rate(peak))
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">0</text>`+"\n", left-4, y0+ph)
		for _, rel := range []int64{t.FromNS, 0, t.EndNS, t.FromNS + int64(span)} {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", xOf(rel), y0+ph+14, esc(ms(rel)))
		}
		fmt.Fprintf(&b, "</g>\n")
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">lines written per second (all files); grey: migration; red: each process's pause gap; time relative to the migration's start</text>`+"\n", left, height-6)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }
