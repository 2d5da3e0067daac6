package bench

import (
	"strings"
	"testing"
)

func TestMergeSection(t *testing.T) {
	legacy := "# livemig bench downtime\n\n| a |\n"
	page := MergeSection(legacy, "sync", "# livemig bench sync\n\n| s1 |\n")
	if !strings.HasPrefix(page, "<!-- livemig bench downtime -->\n# livemig bench downtime") ||
		!strings.Contains(page, "| a |\n<!-- end livemig bench downtime -->\n\n<!-- livemig bench sync -->\n# livemig bench sync") {
		t.Fatalf("legacy page merged:\n%s", page)
	}
	page = MergeSection(page, "sync", "# livemig bench sync\n\n| s2 |\n")
	if strings.Contains(page, "s1") || !strings.Contains(page, "| s2 |") || strings.Count(page, "<!-- livemig bench sync -->") != 1 {
		t.Fatalf("sync section replaced:\n%s", page)
	}
	page2 := MergeSection(page, "downtime", "# livemig bench downtime\n\n| b |\n")
	if strings.Contains(page2, "| a |") || !strings.Contains(page2, "| b |") || !strings.Contains(page2, "| s2 |") ||
		strings.Index(page2, "| b |") > strings.Index(page2, "| s2 |") {
		t.Fatalf("downtime section replaced in place:\n%s", page2)
	}
	if got := MergeSection("", "sync", "x\n"); got != "<!-- livemig bench sync -->\nx\n<!-- end livemig bench sync -->\n" {
		t.Errorf("new page %q", got)
	}
}

func TestLagStatsMissed(t *testing.T) {
	if q := quantile([]int64{5, lagMissed, 1, 3}, 0.5); q != 5 {
		t.Errorf("p50 = %d, want 5", q)
	}
	if q := quantile([]int64{5, lagMissed, 1, 3}, 0.99); q != lagMissed {
		t.Errorf("p99 = %d, want missed", q)
	}
	if s := lagStats([]int64{lagMissed, 4, 2}); s.Median != 4 || s.Min != 2 || s.Max != lagMissed {
		t.Errorf("lagStats = %+v", s)
	}
	if s := lagStats([]int64{lagMissed, 4}); s.Median != lagMissed {
		t.Errorf("even count with a missed one: %+v", s)
	}
}

func TestWrittenParses(t *testing.T) {
	stats := []byte("Number of files: 2\nTotal transferred file size: 2,147,483,648 bytes\nLiteral data: 6,144 bytes\nMatched data: 2,147,477,504 bytes\n")
	if n, err := written(ToolRsyncInplace, stats); err != nil || n != 6144 {
		t.Errorf("rsync --inplace: %d, %v", n, err)
	}
	if n, err := written(ToolRsync, stats); err != nil || n != 2<<30 {
		t.Errorf("rsync -a: %d, %v", n, err)
	}
	if _, err := written(ToolRsync, []byte("nothing")); err == nil {
		t.Error("rsync without --stats lines: no error")
	}
	if n, err := written(ToolLivemig, []byte(`{"ok":true,"stats":{"bytes_written":65536}}`)); err != nil || n != 65536 {
		t.Errorf("livemig: %d, %v", n, err)
	}
	if _, err := written(ToolLivemig, []byte("not json")); err == nil {
		t.Error("livemig bad JSON: no error")
	}
}
