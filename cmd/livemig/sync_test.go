package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
	"golang.org/x/sys/unix"
)

var livemigBin string

func TestMain(m *testing.M) {
	if os.Getenv("LIVEMIG_PLAN_AS_NOBODY") == "1" {
		// TestPlanNotRoot reran this binary as nobody, from /: it needs no livemig
		// binary, and could not build one there.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "livemig-cli-")
	if err != nil {
		panic(err)
	}
	_ = os.Chmod(dir, 0o755) // tests run it as another user too
	livemigBin = filepath.Join(dir, "livemig")
	if out, err := exec.Command("go", "build", "-o", livemigBin, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic("go build: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// livemig runs the built binary and returns its exit status, stdout and stderr.
func livemig(t *testing.T, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(livemigBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run livemig %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSyncBadInputExitsTwo(t *testing.T) {
	base := testutil.MountTmpfs(t)
	src := filepath.Join(base, "src")
	mustT(t, os.MkdirAll(filepath.Join(src, "inner"), 0o755))
	ro := t.TempDir()
	mustT(t, unix.Mount("livemig-test", ro, "tmpfs", unix.MS_RDONLY, "size=1m"))
	t.Cleanup(func() { testutil.Unmount(t, ro) })

	cases := []struct {
		name     string
		args     []string
		mentions string
	}{
		{"SRC missing", []string{"sync", filepath.Join(base, "nope"), filepath.Join(base, "dst")}, filepath.Join(base, "nope")},
		{"DST inside SRC", []string{"sync", src, filepath.Join(src, "inner", "dst")}, "inside SRC"},
		{"SRC inside DST", []string{"sync", filepath.Join(src, "inner"), src}, "inside DST"},
		{"SRC == DST", []string{"sync", src, src + "/."}, "same directory"},
		{"DST not writable", []string{"sync", src, filepath.Join(ro, "dst")}, "not writable"},
		{"DST parent missing", []string{"sync", src, filepath.Join(base, "no/such/dst")}, "parent directory of DST"},
		{"one argument", []string{"sync", src}, "needs SRC and DST"},
		{"bad flag", []string{"sync", "--frobnicate", src, base}, "frobnicate"},
		{"verify: DST missing", []string{"verify", src, filepath.Join(base, "nope")}, "DST does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := livemig(t, nil, c.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(stderr, c.mentions) {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line mentioning %q", code, stderr, c.mentions)
			}
		})
	}
}

func TestSyncOnceAndVerify(t *testing.T) {
	base := testutil.MountTmpfs(t)
	src, dst := filepath.Join(base, "src"), filepath.Join(base, "dst")
	mustT(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	mustT(t, os.WriteFile(filepath.Join(src, "a/b/f"), []byte("hello"), 0o644))
	mustT(t, os.WriteFile(filepath.Join(src, "skip.tmp"), []byte("x"), 0o644))

	code, stdout, stderr := livemig(t, nil, "sync", "--once", "--json", "--exclude", "*.tmp", src, dst)
	if code != 0 {
		t.Fatalf("sync --once: exit %d: %s", code, stderr)
	}
	var res struct {
		OK    bool
		Stats struct {
			FilesCopied int64 `json:"files_copied"`
		}
	}
	mustT(t, json.Unmarshal([]byte(stdout), &res))
	if !res.OK || res.Stats.FilesCopied != 1 {
		t.Errorf("json summary: %s", stdout)
	}
	if _, err := os.Lstat(filepath.Join(dst, "skip.tmp")); err == nil {
		t.Errorf("excluded file copied")
	}
	mustT(t, os.Remove(filepath.Join(src, "skip.tmp")))
	if code, _, stderr := livemig(t, nil, "sync", "--once", src, dst); code != 0 {
		t.Fatalf("second sync --once: exit %d: %s", code, stderr)
	}
	if code, out, errOut := livemig(t, nil, "verify", src, dst); code != 0 {
		t.Fatalf("verify after sync: exit %d: %s %s", code, out, errOut)
	}
	mustT(t, os.WriteFile(filepath.Join(dst, "a/b/f"), []byte("HELLO"), 0o644))
	code, stdout, _ = livemig(t, nil, "verify", "--json", src, dst)
	var v struct {
		Identical   bool
		Differences []struct{ Path, What string }
	}
	mustT(t, json.Unmarshal([]byte(stdout), &v))
	if code != 1 || v.Identical || len(v.Differences) == 0 || v.Differences[0].Path != "a/b/f" {
		t.Errorf("verify of a changed DST: exit %d, %s", code, stdout)
	}
}

func TestSyncFollowStopsCleanlyOnSignal(t *testing.T) {
	base := testutil.MountTmpfs(t)
	src, dst := filepath.Join(base, "src"), filepath.Join(base, "dst")
	mustT(t, os.Mkdir(src, 0o755))
	mustT(t, os.WriteFile(filepath.Join(src, "before"), []byte("1"), 0o644))
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(livemigBin, "sync", src, dst)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		testutil.Start(t, cmd)
		exists := func(p string) func() bool {
			return func() bool { _, err := os.Lstat(p); return err == nil }
		}
		testutil.Eventually(t, 5*time.Second, "the first pass", exists(filepath.Join(dst, "before")))
		after := filepath.Join(src, "after-"+sig.String())
		mustT(t, os.WriteFile(after, []byte("2"), 0o644))
		testutil.Eventually(t, 2*time.Second, "a change followed", exists(filepath.Join(dst, filepath.Base(after))))
		mustT(t, cmd.Process.Signal(sig))
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("%v: livemig sync exited with %v: %s", sig, err, stderr.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v: livemig sync did not stop", sig)
		}
	}
}

// Unreadable files are reported one by one; the rest is mirrored, and the exit status
// says "done with leftovers".
func TestSyncPermissionErrorsArePerPath(t *testing.T) {
	base := testutil.MountTmpfs(t)
	src, dst := filepath.Join(base, "src"), filepath.Join(base, "out", "dst")
	mustT(t, os.MkdirAll(src, 0o755))
	mustT(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	mustT(t, os.Chmod(base, 0o755))
	mustT(t, os.Chmod(filepath.Dir(base), 0o755)) // the test's temporary directory
	mustT(t, os.Chown(filepath.Dir(dst), 65534, 65534))
	mustT(t, os.WriteFile(filepath.Join(src, "readable"), []byte("ok"), 0o644))
	mustT(t, os.WriteFile(filepath.Join(src, "secret"), []byte("no"), 0o600))
	mustT(t, os.Mkdir(filepath.Join(src, "closed"), 0o700))
	mustT(t, os.WriteFile(filepath.Join(src, "closed", "inside"), []byte("no"), 0o644))

	code, _, stderr := livemig(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "sync", "--once", src, dst)
	if code != 3 || !strings.Contains(stderr, "secret") || !strings.Contains(stderr, "closed") {
		t.Fatalf("exit %d (want 3), stderr:\n%s", code, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "readable")); err != nil || string(b) != "ok" {
		t.Errorf("readable file not mirrored: %q %v", b, err)
	}
}
