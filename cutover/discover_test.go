package cutover

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/internal/testutil"
)

func TestDiscoverItemKinds(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("tmpfs mount point", func(t *testing.T) { testItemKinds(t, testutil.MountTmpfs(t)) })
	t.Run("ext4 subdirectory", func(t *testing.T) {
		src := filepath.Join(testutil.MountExt4(t, 64), "data")
		if err := os.Mkdir(src, 0o755); err != nil {
			t.Fatal(err)
		}
		testItemKinds(t, src)
	})
}

func testItemKinds(t *testing.T, src string) {
	h := startChild(t, testutil.BuildC(t, holderC), src)
	d := discoverT(t, src, Options{})
	p := processOf(t, d, h.pid())

	if len(p.Cwd) != 1 || p.Cwd[0].Path != src || p.Cwd[0].Rel != "" || p.Cwd[0].TID != h.pid() {
		t.Errorf("cwd = %+v, want %s of pid %d", p.Cwd, src, h.pid())
	}
	if p.Exe != nil {
		t.Errorf("exe %s reported under %s", p.Exe.Path, src)
	}
	if len(p.Root) != 0 {
		t.Errorf("root %+v reported under %s", p.Root, src)
	}

	fds := []struct {
		name     string
		kind     Kind
		rel      string
		flags    int // expected flags, O_LARGEFILE ignored
		pos      int64
		cloexec  bool
		deleted  bool
		leftover bool
	}{
		{"plain", KindFile, "plain", unix.O_WRONLY, 5, false, false, false},
		{"append", KindFile, "append", unix.O_WRONLY | unix.O_APPEND, 3, false, false, false},
		{"rdwr", KindFile, "rdwr", unix.O_RDWR, 42, false, false, false},
		{"cloexec", KindFile, "cloexec", unix.O_RDONLY, 0, true, false, false},
		{"dir", KindDir, "subdir", unix.O_RDONLY | unix.O_DIRECTORY, 0, false, false, false},
		{"deleted", KindDeleted, "gone", unix.O_RDWR, 10, false, true, false},
		{"fakedeleted", KindFile, "real (deleted)", unix.O_RDONLY, 0, false, false, false},
		{"oddname", KindFile, "with space\nand newline", unix.O_RDONLY, 0, false, false, false},
		{"fifo", KindFIFO, "fifo", unix.O_RDWR | unix.O_NONBLOCK, 0, false, false, true},
		{"socket", KindSocket, "sock", unix.O_RDWR, 0, false, false, true},
	}
	for _, tc := range fds {
		t.Run("fd/"+tc.name, func(t *testing.T) {
			num := h.int(t, tc.name)
			fd := fdOf(t, p, num)
			if fd.Kind != tc.kind {
				t.Errorf("kind %s, want %s", fd.Kind, tc.kind)
			}
			if fd.Rel != tc.rel || fd.Path != filepath.Join(src, tc.rel) {
				t.Errorf("path %q rel %q, want %q", fd.Path, fd.Rel, filepath.Join(src, tc.rel))
			}
			if got := fd.Flags &^ kernelOLargefile; got != tc.flags {
				t.Errorf("flags %s, want %s", FlagNames(got), FlagNames(tc.flags))
			}
			if fd.Pos != tc.pos || fd.CloseOnExec != tc.cloexec || fd.Deleted != tc.deleted {
				t.Errorf("pos %d cloexec %v deleted %v, want %d %v %v", fd.Pos, fd.CloseOnExec, fd.Deleted, tc.pos, tc.cloexec, tc.deleted)
			}
			if fd.TID != h.pid() {
				t.Errorf("tid %d, want the pid %d", fd.TID, h.pid())
			}
			if got := leftoverFor(p, "fd "+strconv.Itoa(num)) != nil; got != tc.leftover {
				t.Errorf("leftover %v, want %v (leftovers %+v)", got, tc.leftover, p.Leftovers)
			}
			// The node is the file the process really has open, as the kernel says.
			var st unix.Stat_t
			link := "/proc/" + strconv.Itoa(h.pid()) + "/fd/" + strconv.Itoa(num)
			if tc.kind != KindSocket {
				if err := unix.Stat(link, &st); err != nil {
					t.Fatal(err)
				}
				if fd.Dev != st.Dev || fd.Ino != st.Ino || fd.Mode != st.Mode {
					t.Errorf("dev/ino/mode %d/%d/%o, want %d/%d/%o", fd.Dev, fd.Ino, fd.Mode, st.Dev, st.Ino, st.Mode)
				}
			}
		})
	}

	maps := []struct {
		name     string
		kind     Kind
		rel      string
		perms    string
		written  bool
		leftover bool
	}{
		{"shared-map", KindSharedMap, "shared", "rw-s", false, false},
		{"private-map", KindPrivateMap, "private", "r--p", false, false},
		{"private-dirty", KindPrivateMap, "privdirty", "rw-p", true, true},
		{"oddname-map", KindSharedMap, "map with space\nand newline", "r--s", false, false},
	}
	for _, tc := range maps {
		t.Run("map/"+tc.name, func(t *testing.T) {
			start := h.hex(t, tc.name)
			m := mapAt(t, p, start)
			if m.Kind != tc.kind || m.Perms != tc.perms || m.Rel != tc.rel || m.Offset != 0 {
				t.Errorf("got %s %s %q off %d, want %s %s %q off 0", m.Kind, m.Perms, m.Rel, m.Offset, tc.kind, tc.perms, tc.rel)
			}
			if (m.WrittenBytes > 0) != tc.written {
				t.Errorf("written bytes %d, want written=%v", m.WrittenBytes, tc.written)
			}
			if got := leftoverFor(p, "map "+mapFilesName(m.Start, m.End)) != nil; got != tc.leftover {
				t.Errorf("leftover %v, want %v (leftovers %+v)", got, tc.leftover, p.Leftovers)
			}
		})
	}
}

func TestDiscoverExeUnderSource(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	bin := filepath.Join(src, "bin", "ticker")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, testutil.BuildC(t, tickerC), bin)
	work := t.TempDir()
	c := startChild(t, bin, work)
	p := processOf(t, discoverT(t, src, Options{}), c.pid())
	if p.Exe == nil || p.Exe.Rel != "bin/ticker" {
		t.Fatalf("exe = %+v, want bin/ticker", p.Exe)
	}
	if leftoverFor(p, "exe") == nil {
		t.Errorf("no exe leftover: %+v", p.Leftovers)
	}
	if len(p.Maps) == 0 {
		t.Errorf("the executable's mappings are not listed")
	}
	for _, m := range p.Maps {
		if m.Rel != "bin/ticker" {
			t.Errorf("mapping of %q listed", m.Path)
		}
	}
	if len(p.Cwd) != 0 || len(p.FDs) != 0 {
		t.Errorf("cwd %+v fds %+v are not under the source", p.Cwd, p.FDs)
	}
}

// A file reached through a bind mount of part of SRC's filesystem is under SRC, with
// its path below SRC; a sibling directory that merely shares a name prefix is not.
func TestDiscoverThroughBindMount(t *testing.T) {
	testutil.RequireRoot(t)
	fs := testutil.MountTmpfs(t)
	for _, d := range []string{"data/sub", "data2"} {
		if err := os.MkdirAll(filepath.Join(fs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bind := t.TempDir()
	if err := unix.Mount(filepath.Join(fs, "data/sub"), bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testutil.Unmount(t, bind) })

	viaBind := startChild(t, testutil.BuildC(t, tickerC), bind)
	sibling := startChild(t, testutil.BuildC(t, tickerC), filepath.Join(fs, "data2"))

	for _, tc := range []struct {
		src, rel string
	}{
		{filepath.Join(fs, "data"), "sub/ticks"},
		{filepath.Join(fs, "data/sub"), "ticks"},
		{fs, "data/sub/ticks"},
	} {
		d := discoverT(t, tc.src, Options{})
		p := processOf(t, d, viaBind.pid())
		if len(p.FDs) != 1 || p.FDs[0].Rel != tc.rel || p.FDs[0].Path != filepath.Join(bind, "ticks") {
			t.Errorf("SRC %s: fds %+v, want %s reached as %s", tc.src, p.FDs, tc.rel, filepath.Join(bind, "ticks"))
		}
		if tc.src != fs && d.has(sibling.pid()) {
			t.Errorf("SRC %s: pid %d in %s reported", tc.src, sibling.pid(), filepath.Join(fs, "data2"))
		}
	}
}

// A thread with its own fd table or its own cwd is read on its own, and its items name it.
func TestDiscoverThreadsWithOwnTables(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	c := startChild(t, testutil.BuildC(t, threadsC, "-pthread"), src)
	p := processOf(t, discoverT(t, src, Options{}), c.pid())
	filesTID, fsTID := c.int(t, "files-tid"), c.int(t, "fs-tid")
	if len(p.Threads) != 3 {
		t.Errorf("threads %v, want 3", p.Threads)
	}
	// unshare(CLONE_FILES) copies the table: the thread has "shared" too, as its own fd.
	type taskFD struct{ tid, num int }
	want := map[taskFD]bool{
		{c.pid(), c.int(t, "shared")}:       true,
		{filesTID, c.int(t, "shared")}:      true,
		{filesTID, c.int(t, "thread-only")}: true,
	}
	for _, fd := range p.FDs {
		if !want[taskFD{fd.TID, fd.Num}] {
			t.Errorf("unexpected fd %d of task %d (%s)", fd.Num, fd.TID, fd.Rel)
		}
		delete(want, taskFD{fd.TID, fd.Num})
	}
	for fd := range want {
		t.Errorf("fd %d of task %d not discovered", fd.num, fd.tid)
	}
	if len(p.Cwd) != 1 || p.Cwd[0].TID != fsTID || p.Cwd[0].Rel != "sub" {
		t.Errorf("cwd %+v, want sub of tid %d only", p.Cwd, fsTID)
	}
}

func TestDiscoverPIDFilter(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	bin := testutil.BuildC(t, threadsC, "-pthread")
	a := startChild(t, bin, src)
	b := startChild(t, testutil.BuildC(t, tickerC), src)

	d := discoverT(t, src, Options{PIDs: []int{b.pid()}})
	if len(d.Processes) != 1 || d.Processes[0].PID != b.pid() {
		t.Errorf("--pid %d: got %v", b.pid(), d.Targets())
	}
	// A thread id stands for its whole process: both fd tables, the thread's own cwd.
	d = discoverT(t, src, Options{PIDs: []int{a.int(t, "fs-tid")}})
	if len(d.Processes) != 1 || d.Processes[0].PID != a.pid() || len(d.Processes[0].FDs) != 3 || len(d.Processes[0].Cwd) != 1 {
		t.Errorf("--pid tid %d: got %+v", a.int(t, "fs-tid"), d.Processes)
	}

	outside := startChild(t, testutil.BuildC(t, tickerC), t.TempDir())
	_, err := Discover(src, Options{PIDs: []int{outside.pid()}})
	var notUsing *NotUsingSourceError
	if !errors.As(err, &notUsing) || notUsing.PID != outside.pid() {
		t.Errorf("pid not using SRC: err %v, want NotUsingSourceError", err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	_, err = Discover(src, Options{PIDs: []int{cmd.Process.Pid}})
	var noProc *NoSuchProcessError
	if !errors.As(err, &noProc) {
		t.Errorf("exited pid: err %v, want NoSuchProcessError", err)
	}
}

// livemig never reports itself, nor what it excludes, and kernel threads are skipped.
func TestDiscoverSkipsSelfAndExcluded(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	f, err := os.Create(filepath.Join(src, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := startChild(t, testutil.BuildC(t, tickerC), src)
	d := discoverT(t, src, Options{})
	if d.has(os.Getpid()) {
		t.Errorf("discovered livemig itself (pid %d)", os.Getpid())
	}
	processOf(t, d, c.pid())
	if d := discoverT(t, src, Options{Exclude: []int{c.pid()}}); len(d.Processes) != 0 {
		t.Errorf("excluded pid %d reported: %v", c.pid(), d.Targets())
	}
}

func TestResolveSource(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := testutil.MountTmpfs(t)
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(mnt, "d"), link); err != nil {
		t.Fatal(err)
	}
	s, err := ResolveSource(link)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path != filepath.Join(mnt, "d") || s.MountPoint || s.FSType != "tmpfs" || s.FSPath != "/d" {
		t.Errorf("ResolveSource(%s) = %+v", link, s)
	}
	if s, err = ResolveSource(mnt); err != nil || !s.MountPoint || s.FSPath != "/" {
		t.Errorf("ResolveSource(%s) = %+v, %v", mnt, s, err)
	}
	if _, err := ResolveSource(filepath.Join(mnt, "missing")); err == nil {
		t.Error("missing source accepted")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A process in another mount namespace that reaches SRC's filesystem through a bind
// mount that exists only there is found, with its path below SRC.
func TestDiscoverOtherMountNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "unshare")
	src := testutil.MountTmpfs(t)
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	alt := t.TempDir()
	script := `mount --bind "$1/sub" "$2" && cd "$2" && exec 3>>"$2/f" && echo ready && exec sleep 100`
	c := startChild(t, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", src, alt)
	p := processOf(t, discoverT(t, src, Options{}), c.pid())
	fd := fdOf(t, p, 3)
	if fd.Rel != "sub/f" || fd.Path != filepath.Join(alt, "f") {
		t.Errorf("fd 3 = %q rel %q, want %s rel sub/f", fd.Path, fd.Rel, filepath.Join(alt, "f"))
	}
	if len(p.Cwd) != 1 || p.Cwd[0].Rel != "sub" {
		t.Errorf("cwd %+v, want rel sub", p.Cwd)
	}
}

// BenchmarkDiscover: one pass over /proc with one user of SRC among 100 other processes;
// FreezeUsers pays one such pass inside the pause.
func BenchmarkDiscover(b *testing.B) {
	src := startBenchProcesses(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := Discover(src, Options{})
		if err != nil || len(d.Processes) != 1 {
			b.Fatalf("%v %v", d, err)
		}
	}
}

// BenchmarkRescan is the pass FreezeUsers makes inside the pause: the same setup, with
// the other processes known from a first pass.
func BenchmarkRescan(b *testing.B) {
	src := startBenchProcesses(b)
	s, err := ResolveSource(src)
	if err != nil {
		b.Fatal(err)
	}
	_, nonUsers, err := discover(s, Options{}, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, _, err := discover(s, Options{}, false, nonUsers)
		if err != nil || len(d.Processes) != 1 {
			b.Fatalf("%v %v", d, err)
		}
	}
}

// A process chrooted into SRC has its root there; /proc shows its paths from our root.
func TestDiscoverChrootedProcess(t *testing.T) {
	testutil.RequireRoot(t)
	src := testutil.MountTmpfs(t)
	copyFile(t, testutil.BuildC(t, tickerC, "-static", "-pthread"), filepath.Join(src, "ticker"))
	cmd := exec.Command("/ticker", "/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: src}
	testutil.Start(t, cmd)
	testutil.Eventually(t, 5*time.Second, "ticker started", func() bool { return testutil.FileSize(filepath.Join(src, "ticks")) > 0 })

	p := processOf(t, discoverT(t, src, Options{}), cmd.Process.Pid)
	if len(p.Root) != 1 || p.Root[0].Rel != "" || p.Root[0].Path != src {
		t.Errorf("root %+v, want %s", p.Root, src)
	}
	if len(p.Cwd) != 1 || p.Cwd[0].Rel != "" || p.Exe == nil || p.Exe.Rel != "ticker" {
		t.Errorf("cwd %+v exe %+v", p.Cwd, p.Exe)
	}
	if len(p.FDs) != 1 || p.FDs[0].Rel != "ticks" || p.FDs[0].Path != filepath.Join(src, "ticks") {
		t.Errorf("fds %+v, want ticks", p.FDs)
	}
}

// startBenchProcesses starts 100 processes elsewhere and one with its cwd in a new
// tmpfs, which it returns.
func startBenchProcesses(b *testing.B) string {
	testutil.RequireRoot(b)
	src := testutil.MountTmpfs(b)
	other := b.TempDir()
	for i := 0; i <= 100; i++ {
		c := exec.Command("sleep", "1000")
		c.Dir = other
		if i == 100 {
			c.Dir = src
		}
		testutil.Start(b, c)
	}
	return src
}
