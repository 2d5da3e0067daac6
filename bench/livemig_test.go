package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeLivemig writes a script standing in for the livemig binary: `sync` answers as a
// build without it, `cutover` records its arguments, prints report on stdout, stderr on
// stderr, and exits with code.
func fakeLivemig(t *testing.T, report string, code int, stderr string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "livemig")
	if err := os.WriteFile(filepath.Join(dir, "report"), []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stderr"), []byte(stderr), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
d=$(dirname "$0")
case "$1" in
sync) echo 'livemig: unknown command "sync" (see livemig --help)' >&2; exit 2 ;;
cutover) echo "$*" > "$d/args"; cat "$d/report"; cat "$d/stderr" >&2; exit ` + strconv.Itoa(code) + ` ;;
esac
exit 2
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func fakeEnv(t *testing.T, livemig string) *env {
	return &env{
		st:      &Storage{Src: t.TempDir(), Dst: t.TempDir()},
		wl:      &Workload{Writers: []*Writer{{PID: 101}, {PID: 102}}},
		livemig: livemig,
	}
}

// The runner reads the contract's report: freeze..resume windows per process, the
// reported pause, and falls back to the whole run for a process the report lacks.
func TestLivemigRunnerReadsReport(t *testing.T) {
	report := `{"src":"/s","dst":"/d","remount":true,"freeze":"sigstop","result":"done","clock":"CLOCK_MONOTONIC",
 "phases":[{"name":"freeze","start_ns":1000,"duration_ns":10}],
 "processes":[{"pid":101,"comm":"workload","frozen_ns":5000,"resumed_ns":9000,"pause_ns":4000,"fds_moved":1,"cwd_moved":true,"maps_moved":0,"leftovers":[]}],
 "leftovers":[]}`
	lm := fakeLivemig(t, report, 0, "")
	e := fakeEnv(t, lm)
	m, err := runLivemig(context.Background(), e, true)
	if err != nil {
		t.Fatal(err)
	}
	if w := m.windows[101]; w != (Window{5000, 9000}) || m.reported[101] != 4000 {
		t.Errorf("pid 101: window %+v reported %d", w, m.reported[101])
	}
	if w := m.windows[102]; w.From != m.start || w.To != m.end {
		t.Errorf("pid 102 (not in the report): window %+v, want the whole run %d..%d", w, m.start, m.end)
	}
	if m.report == nil || m.report.Result != "done" || !m.report.Remount || len(m.report.Phases) != 1 {
		t.Errorf("report %+v", m.report)
	}
	args, _ := os.ReadFile(filepath.Join(filepath.Dir(lm), "args"))
	if want := "cutover --json --remount " + e.st.Src + " " + e.st.Dst; strings.TrimSpace(string(args)) != want {
		t.Errorf("ran %q, want %q", args, want)
	}
	if len(m.notes) == 0 || !strings.Contains(m.notes[0], "cp -a") {
		t.Errorf("notes %v: want the cp -a pre-copy noted", m.notes)
	}
}

func TestLivemigRunnerLeftovers(t *testing.T) {
	lm := fakeLivemig(t, `{"result":"done-with-leftovers","processes":[],"leftovers":[{"pid":101,"what":"exe","path":"/x","reason":"r"}]}`, 3, "")
	m, err := runLivemig(context.Background(), fakeEnv(t, lm), false)
	if err != nil || !strings.Contains(strings.Join(m.notes, ";"), "1 leftover") {
		t.Errorf("exit 3: %v, notes %v; want a run noting the leftover", err, m.notes)
	}
}

func TestLivemigRunnerRolledBack(t *testing.T) {
	lm := fakeLivemig(t, `{"result":"rolled-back","error":"swap of pid 101 failed","processes":[]}`, 1, "rolled back")
	_, err := runLivemig(context.Background(), fakeEnv(t, lm), false)
	if err == nil || !strings.Contains(err.Error(), "exit 1") || !strings.Contains(err.Error(), "swap of pid 101 failed") {
		t.Errorf("err = %v, want exit 1 with the report's error", err)
	}
}

func TestLivemigRunnerUnknownCommand(t *testing.T) {
	lm := fakeLivemig(t, ``, 2, `livemig: unknown command "cutover" (see livemig --help)`)
	_, err := runLivemig(context.Background(), fakeEnv(t, lm), false)
	var un errUnavailable
	if !errors.As(err, &un) || !strings.Contains(un.why, "unknown command") {
		t.Errorf("err = %v, want errUnavailable", err)
	}
}

func TestLivemigRunnerBadReport(t *testing.T) {
	lm := fakeLivemig(t, `not json`, 0, "")
	if _, err := runLivemig(context.Background(), fakeEnv(t, lm), false); err == nil || !strings.Contains(err.Error(), "does not parse") {
		t.Errorf("err = %v", err)
	}
}
