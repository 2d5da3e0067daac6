package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
	"github.com/livemig/livemig/internal/testutil"
)

// runPlan runs the command in-process and returns its exit status, stdout and stderr.
// Commands print to os.Stdout, so it is swapped for a pipe meanwhile.
func runPlan(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	outc := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		outc <- string(b)
	}()
	var stderr bytes.Buffer
	code := run(append([]string{"plan"}, args...), w, &stderr)
	os.Stdout = saved
	w.Close()
	out := <-outc
	r.Close()
	return code, out, stderr.String()
}

// startUser starts a process with its cwd in dir and fd 3 open on dir/out (O_APPEND).
func startUser(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "out"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "100")
	cmd.Dir = dir
	cmd.ExtraFiles = []*os.File{f}
	testutil.Start(t, cmd)
	return cmd
}

func TestPlanJSON(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	user := startUser(t, src)
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifoUser := exec.Command("sh", "-c", "exec 4<>fifo; exec sleep 100")
	fifoUser.Dir = src
	testutil.Start(t, fifoUser)
	testutil.Eventually(t, 5*time.Second, "fifo opened", func() bool {
		_, err := os.Readlink("/proc/" + strconv.Itoa(fifoUser.Process.Pid) + "/fd/4")
		return err == nil && strings.Contains(readCmdline(fifoUser.Process.Pid), "sleep")
	})

	code, out, stderr := runPlan(t, "--json", src)
	if code != exitOK {
		t.Fatalf("exit %d, want 0 (plan only reports leftovers): %s", code, stderr)
	}
	var got struct {
		cutover.Discovery
		Summary planSummary `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if got.Source.Path != src || !got.Source.MountPoint || got.Summary.Processes != 2 || got.Summary.Leftovers != 1 {
		t.Errorf("source %+v summary %+v, want 2 processes, 1 leftover", got.Source, got.Summary)
	}
	for _, p := range got.Processes {
		switch p.PID {
		case user.Process.Pid:
			if len(p.FDs) != 1 || p.FDs[0].Num != 3 || p.FDs[0].Kind != cutover.KindFile ||
				p.FDs[0].Flags&unix.O_APPEND == 0 || p.FDs[0].Rel != "out" || len(p.Cwd) != 1 {
				t.Errorf("user process: fds %+v cwd %+v", p.FDs, p.Cwd)
			}
		case fifoUser.Process.Pid:
			if len(p.Leftovers) != 1 || p.Leftovers[0].What != "fd 4" || p.Leftovers[0].Reason == "" {
				t.Errorf("fifo process leftovers %+v", p.Leftovers)
			}
		default:
			t.Errorf("unexpected process %d %s", p.PID, p.Comm)
		}
	}

	// --pid narrows to one process.
	code, out, _ = runPlan(t, "--json", "--pid", strconv.Itoa(user.Process.Pid), src)
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitOK || len(got.Processes) != 1 {
		t.Errorf("--pid: exit %d, %d processes, %v", code, len(got.Processes), err)
	}
}

func TestPlanText(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	user := startUser(t, src)
	code, out, stderr := runPlan(t, src)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"pid " + strconv.Itoa(user.Process.Pid) + " sleep",
		"cwd    " + src,
		"fd 3   file    " + src + "/out  O_WRONLY|O_APPEND",
		"1 process(es), 2 item(s) under the source, 0 leftover(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPlanBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	file := filepath.Join(src, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	elsewhere := startUser(t, t.TempDir())
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no source", nil, "SRC and optionally DST"},
		{"three args", []string{src, src, src}, "SRC and optionally DST"},
		{"missing", []string{filepath.Join(src, "missing")}, "no such file or directory"},
		{"not a directory", []string{file}, "not a directory"},
		{"pid not using", []string{"--pid", strconv.Itoa(elsewhere.Process.Pid), src}, "does not use"},
		{"pid gone", []string{"--pid", strconv.Itoa(gone.Process.Pid), src}, "no such process"},
		{"bad flag", []string{"--bogus", src}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runPlan(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) || out != "" {
				t.Errorf("exit %d stderr %q stdout %q, want exit 2 with %q", code, stderr, out, tc.want)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") > 0 && tc.name != "bad flag" {
				t.Errorf("more than one line on stderr: %q", stderr)
			}
		})
	}
}

// Not root: exit 2 with one line, before anything is read (the built binary run as nobody).
func TestPlanNotRoot(t *testing.T) {
	testutil.RequireRoot(t)
	code, _, stderr := livemig(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "plan", "/")
	if code != exitUsage || !strings.Contains(stderr, "needs root") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("as nobody: exit %d, stderr %q; want exit 2 and one line saying root is needed", code, stderr)
	}
}

func readCmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return string(b)
}

// The hidden guardian subcommand of the real binary resumes what it was told of.
func TestGuardianSubcommand(t *testing.T) {
	testutil.RequireRoot(t)
	bin := filepath.Join(t.TempDir(), "livemig")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sleeper := exec.Command("sleep", "100")
	testutil.Start(t, sleeper)
	testutil.ContinueAtCleanup(t, sleeper.Process.Pid)
	g, err := cutover.StartGuardian(cutover.GuardianOptions{Path: bin})
	if err != nil {
		t.Fatal(err)
	}
	f := cutover.NewSignalFreezer(g)
	t.Cleanup(func() { _ = f.Thaw() })
	target, err := cutover.TargetOf(sleeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Freeze(t.Context(), []cutover.Target{target}); err != nil {
		t.Fatal(err)
	}
	if !testutil.AllStopped(target.PID) {
		t.Fatal("not frozen")
	}
	if err := g.ResumeAll(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Second, "resumed by livemig guardian", func() bool { return testutil.NoneStopped(target.PID) })
}
