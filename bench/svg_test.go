package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// parseSVG checks that data is well-formed XML with an <svg> root and returns the count
// of each element name.
func parseSVG(t *testing.T, data []byte) map[string]int {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	count := map[string]int{}
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not valid XML: %v\n%s", err, data)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			count[se.Name.Local]++
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return count
}

func TestWriteSVG(t *testing.T) {
	tl := newTimeline(1_000_000_000, 1_050_000_000)
	l := ParseLog(logOf(steady(0, 1500, 500_000_000)...)) // 1 line/ms around the migration
	tl.add(l)
	tl.Pauses = append(tl.Pauses, [2]int64{10_000_000, 30_000_000})
	var b bytes.Buffer
	err := WriteSVG(&b, `title with <&> "quotes"`, []Panel{{Title: "1 x 1 — gdb & co", T: tl}, {Title: "empty", T: nil}})
	if err != nil {
		t.Fatal(err)
	}
	count := parseSVG(t, b.Bytes())
	if count["polyline"] != 1 || count["rect"] < 4 || count["g"] != 2 {
		t.Errorf("elements %v: want one polyline, the pause and migration rects, two panels", count)
	}
	if !strings.Contains(b.String(), "pause 20.0 ms") {
		t.Error("the pause is not marked with its length")
	}
	total := 0
	for _, c := range tl.Counts {
		total += c
	}
	if total == 0 {
		t.Error("no line fell in the timeline's window")
	}
}
