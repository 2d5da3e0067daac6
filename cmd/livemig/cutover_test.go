package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
	"github.com/livemig/livemig/internal/testutil"
)

// writer is a test program that writes numbered lines under a directory while it is
// being moved: every line must end up exactly once, in order, on the new storage.
type writer struct {
	name  string
	start func(t *testing.T, dir string) *exec.Cmd // started, its stdout said "ready"
	files []string                                 // files under dir holding lines 0..N
	skip  map[string]int64                         // bytes before the first line
	held  int                                      // fds it keeps open under dir all along
}

var (
	goWriterOnce sync.Once
	goWriterPath string
)

func writers(t *testing.T) []writer {
	cWriter := func(t *testing.T, dir string) *exec.Cmd {
		src, err := os.ReadFile("testdata/writer.c")
		if err != nil {
			t.Fatal(err)
		}
		return startReady(t, exec.Command(testutil.BuildC(t, string(src)), dir))
	}
	goWriter := func(t *testing.T, dir string) *exec.Cmd {
		goWriterOnce.Do(func() {
			goWriterPath = filepath.Join(filepath.Dir(livemigBin), "gowriter")
			if out, err := exec.Command("go", "build", "-o", goWriterPath, "./testdata/gowriter").CombinedOutput(); err != nil {
				t.Fatalf("build gowriter: %v\n%s", err, out)
			}
		})
		cmd := exec.Command(goWriterPath, dir)
		cmd.Env = append(os.Environ(), "GOMAXPROCS=4")
		return startReady(t, cmd)
	}
	bashWriter := func(t *testing.T, dir string) *exec.Cmd {
		// The sleep children are forked, with the cwd and fds, all the time, during the
		// freeze too.
		script := `cd "$1" && exec 3>plain 4>>append && echo ready && i=0 && while :; do echo $i >&3; echo $i >&4; echo $i >> cwdfile; i=$((i+1)); sleep 0.002; done`
		return startReady(t, exec.Command("bash", "-c", script, "bash", dir))
	}
	return []writer{
		{name: "c", start: cWriter, files: []string{"plain", "append", "rdwr", "cloexec", "cwdfile"}, skip: map[string]int64{"rdwr": 12345}, held: 5},
		{name: "go", start: goWriter, files: []string{"plain", "append", "cloexec", "cwdfile"}, held: 3},
		{name: "bash", start: bashWriter, files: []string{"plain", "append", "cwdfile"}, held: 2},
	}
}

// startReady starts cmd in its own process group, waits for its "ready" line, and kills
// the group at cleanup.
func startReady(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("%s: no ready line (%q, %v)", cmd.Path, line, err)
	}
	return cmd
}

// Writers in C, Go and bash, with every kind of fd and their cwd under SRC, are moved,
// with --remount and without: after the cutover every line is present exactly once, in
// order, on the new storage; flags and offsets are kept; nothing of theirs is left on the
// old storage.
func TestCutoverMovesWriters(t *testing.T) {
	testutil.RequireRoot(t)
	for _, w := range writers(t) {
		for _, remount := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/remount=%v", w.name, remount), func(t *testing.T) {
				oldFS, newFS := testutil.MountExt4(t, 32), testutil.MountExt4(t, 32)
				src, dst := filepath.Join(oldFS, "job"), filepath.Join(newFS, "job")
				if remount {
					src, dst = oldFS, newFS
				}
				for _, d := range []string{src, dst} {
					if err := os.MkdirAll(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				var oldSt unix.Stat_t
				if err := unix.Stat(oldFS, &oldSt); err != nil {
					t.Fatal(err)
				}
				cmd := w.start(t, src)
				time.Sleep(50 * time.Millisecond)
				before := fdFlags(t, cmd.Process.Pid, src)

				args := []string{"cutover", "--json", src, dst}
				if remount {
					args = []string{"cutover", "--json", "--remount", src, dst}
				}
				code, stdout, stderr := livemig(t, nil, args...)
				if code != 0 {
					t.Fatalf("livemig %s: exit %d\n%s\n%s", strings.Join(args, " "), code, stdout, stderr)
				}
				rep := parseReport(t, stdout)
				if rep.Result != cutover.ResultDone || len(rep.Processes) == 0 {
					t.Fatalf("report: result %q, %d processes\n%s", rep.Result, len(rep.Processes), stdout)
				}
				for _, p := range rep.Processes {
					if p.PauseNs <= 0 || p.FrozenNs <= 0 || p.ResumedNs < p.FrozenNs {
						t.Errorf("pid %d: pause %d ns from %d to %d", p.PID, p.PauseNs, p.FrozenNs, p.ResumedNs)
					}
				}
				time.Sleep(100 * time.Millisecond) // lines written on the new storage

				final := dst
				if remount {
					final = src
				}
				var st unix.Stat_t
				if err := unix.Stat(final, &st); err != nil {
					t.Fatal(err)
				}
				newDev := st.Dev
				after := fdFlags(t, cmd.Process.Pid, final)
				compared := 0
				for fd, fl := range before {
					a, ok := after[fd] // (cwdfile and bash's redirections come and go)
					if !ok {
						continue
					}
					compared++
					if a != fl {
						t.Errorf("fd %d: flags %o before, %o after", fd, fl, a)
					}
				}
				if compared < w.held {
					t.Errorf("flags compared on %d fds, but the writer holds %d under the tree (before %v, after %v)", compared, w.held, before, after)
				}
				assertNothingOn(t, cmd.Process.Pid, newDev, src)
				_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
				_ = cmd.Wait()

				for _, f := range w.files {
					assertLines(t, filepath.Join(final, f), w.skip[f])
				}
				if aside := asideMounts(oldSt.Dev); remount && len(aside) > 0 {
					t.Errorf("the old filesystem is still mounted aside at %v", aside)
					unmountAside(t, oldSt.Dev)
				}
			})
		}
	}
}

func parseReport(t *testing.T, stdout string) cutover.Report {
	t.Helper()
	var rep cutover.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	return rep
}

// fdFlags is fd number -> fdinfo flags of pid, for its fds under dir.
func fdFlags(t *testing.T, pid int, dir string) map[int]int64 {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	flags := map[int]int64{}
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); !strings.HasPrefix(target, dir+"/") && target != dir {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags[fd], _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			}
		}
	}
	return flags
}

// assertNothingOn fails if pid or a process of its group still has an fd or cwd under
// oldPath that is not on the new filesystem newDev.
func assertNothingOn(t *testing.T, pid int, newDev uint64, oldPath string) {
	t.Helper()
	pids := []int{pid}
	if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, f := range strings.Fields(string(kids)) {
			k, _ := strconv.Atoi(f)
			pids = append(pids, k)
		}
	}
	for _, p := range pids {
		links := []string{fmt.Sprintf("/proc/%d/cwd", p)}
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		for _, e := range entries {
			links = append(links, fmt.Sprintf("/proc/%d/fd/%s", p, e.Name()))
		}
		for _, l := range links {
			target, err := os.Readlink(l)
			if err != nil || !strings.HasPrefix(target, oldPath) && !strings.Contains(target, "livemig-old-") {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(l, &st) == nil && st.Dev != newDev {
				t.Errorf("%s -> %s is still on the old storage", l, target)
			}
		}
	}
}

// assertLines checks that path holds, after skip bytes, the lines 0, 1, 2, ... each
// exactly once.
func assertLines(t *testing.T, path string, skip int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) < skip {
		t.Fatalf("%s: %d bytes, fewer than the %d before the first line", path, len(data), skip)
	}
	lines := strings.Split(string(data[skip:]), "\n")
	if last := lines[len(lines)-1]; last != "" { // a line cut by the kill
		lines = lines[:len(lines)-1]
	} else {
		lines = lines[:len(lines)-1]
	}
	if len(lines) < 20 {
		t.Fatalf("%s: only %d lines", path, len(lines))
	}
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			t.Fatalf("%s: line %d is %q, want %d (a line lost, doubled or torn)", path, i, l, i)
		}
	}
}

// proc is a test program driven through its stdin and stdout.
type proc struct {
	cmd *exec.Cmd
	in  *os.File
	out *bufio.Reader
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = inR
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	t.Cleanup(func() {
		inW.Close()
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		_ = cmd.Wait()
	})
	p := &proc{cmd: cmd, in: inW, out: bufio.NewReader(out)}
	p.expect(t, "ready")
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) expect(t *testing.T, want string) {
	t.Helper()
	line, err := p.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != want {
		t.Fatalf("pid %d said %q (%v), want %q", p.pid(), line, err, want)
	}
}

func (p *proc) ask(t *testing.T, want string) {
	t.Helper()
	if _, err := p.in.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	p.expect(t, want)
}

// A reader blocked on a fifo outside SRC, a holder of flock and POSIX locks, a deleted
// but open file and a shared writable mapping are all moved, each as it must be.
func TestCutoverFifoLocksDeletedMapping(t *testing.T) {
	testutil.RequireRoot(t)
	src, dst := testutil.MountTmpfs(t), testutil.MountExt4(t, 32)
	holderSrc, err := os.ReadFile("testdata/holder.c")
	if err != nil {
		t.Fatal(err)
	}
	holder := testutil.BuildC(t, string(holderSrc))
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"locked": 100, "deleted": 0, "mapped": 0} {
		if err := os.WriteFile(filepath.Join(src, name), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reader := startProc(t, holder, "fifo", fifo, src)
	fifoW, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fifoW.Close()
	fmt.Fprintln(fifoW, "before")
	locker := startProc(t, holder, "locks", filepath.Join(src, "locked"))
	deleted := startProc(t, holder, "deleted", filepath.Join(src, "deleted"))
	mapper := startProc(t, holder, "mmap", filepath.Join(src, "mapped"))
	testutil.Eventually(t, 5*time.Second, "the fifo's first line", func() bool {
		data, _ := os.ReadFile(filepath.Join(src, "fromfifo"))
		return string(data) == "before\n"
	})

	code, stdout, stderr := livemig(t, nil, "cutover", "--json", src, dst)
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, stdout, stderr)
	}
	rep := parseReport(t, stdout)
	if len(rep.Processes) != 4 {
		t.Errorf("%d processes moved, want 4:\n%s", len(rep.Processes), stdout)
	}

	// The reader still gets its data, and writes it through its new cwd.
	fmt.Fprintln(fifoW, "after")
	testutil.Eventually(t, 5*time.Second, "the fifo's second line on DST", func() bool {
		data, _ := os.ReadFile(filepath.Join(dst, "fromfifo"))
		return string(data) == "before\nafter\n"
	})
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", reader.pid())); cwd != dst {
		t.Errorf("reader's cwd is %s, want %s", cwd, dst)
	}

	// Another process sees both locks held on the new file, none on the old one.
	for path, wantHeld := range map[string]bool{filepath.Join(dst, "locked"): true, filepath.Join(src, "locked"): false} {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 100}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		held := lk.Type != unix.F_UNLCK && int(lk.Pid) == locker.pid()
		flockErr := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		f.Close()
		if held != wantHeld || (flockErr == unix.EWOULDBLOCK) != wantHeld {
			t.Errorf("%s: POSIX lock by pid %d held=%v (F_GETLK %+v), flock busy=%v; want held=%v", path, locker.pid(), held, lk, flockErr, wantHeld)
		}
	}

	// The deleted file keeps its content and offset, on the new filesystem.
	deleted.ask(t, "read world pos 11")
	var st, dstSt unix.Stat_t
	unix.Stat(dst, &dstSt)
	for fd := 3; fd < 10; fd++ {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", deleted.pid(), fd)); err == nil && strings.HasSuffix(target, "(deleted)") {
			unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", deleted.pid(), fd), &st)
			if st.Dev != dstSt.Dev {
				t.Errorf("deleted file fd %d -> %s is not on DST's filesystem", fd, target)
			}
		}
	}

	// A write through the mapping after the cutover lands in the new file only.
	mapper.ask(t, "done")
	if data, _ := os.ReadFile(filepath.Join(dst, "mapped")); !bytes.HasPrefix(data, []byte("MAPPED")) {
		t.Errorf("DST's mapped file does not have the write made through the mapping: %q", data[:16])
	}
	if data, _ := os.ReadFile(filepath.Join(src, "mapped")); bytes.HasPrefix(data, []byte("MAPPED")) {
		t.Errorf("the write through the mapping went to the old file")
	}
}

// Bad input is refused with exit 2 and one line naming the problem, before anything is
// frozen: the writer keeps running throughout.
func TestCutoverBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	src, other := testutil.MountTmpfs(t), t.TempDir()
	dst := filepath.Join(other, "dst")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(src, "inside")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	w := startReady(t, exec.Command("bash", "-c", `cd "$1" && echo ready && while :; do echo x >> out; sleep 0.005; done`, "bash", src))
	idle := startReady(t, exec.Command("bash", "-c", `echo ready; exec sleep 100`))
	cases := []struct {
		name string
		cred *syscall_Credential
		args []string
		says string
	}{
		{"not root", &syscall_Credential{Uid: 65534, Gid: 65534}, []string{src, dst}, "needs root"},
		{"SRC missing", nil, []string{filepath.Join(other, "missing"), dst}, "missing"},
		{"DST missing", nil, []string{src, filepath.Join(other, "missing")}, "missing"},
		{"DST inside SRC", nil, []string{src, inside}, "inside SRC"},
		{"SRC is DST", nil, []string{src, src}, "same directory"},
		{"remount without a mount point", nil, []string{"--remount", src, dst}, "not a mount point"},
		{"pid not using SRC", nil, []string{"--pid", strconv.Itoa(idle.Process.Pid), src, dst}, "does not use"},
		{"bad freeze mode", nil, []string{"--freeze", "magic", src, dst}, "--freeze"},
		{"one argument", nil, []string{src}, "needs SRC and DST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cred *syscall_Credential
			if tc.cred != nil {
				cred = tc.cred
			}
			code, stdout, stderr := livemig(t, cred, append([]string{"cutover"}, tc.args...)...)
			if code != 2 || !strings.Contains(stderr, tc.says) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit 2 and one line saying %q", code, stderr, stdout, tc.says)
			}
			if testutil.AllStopped(w.Process.Pid) {
				t.Errorf("the writer was left stopped")
			}
		})
	}
}

type syscall_Credential = syscall.Credential
