package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
)

// The migration methods bench compares, on identical workloads.
const (
	MethodLivemig        = "livemig"         // livemig cutover SRC DST: re-points to DST paths
	MethodLivemigRemount = "livemig-remount" // livemig cutover --remount SRC DST
	MethodGDB            = "gdb"             // seed 000: one gdb -batch per process
	MethodRsyncRemount   = "rsync-remount"   // seed 001: SIGSTOP, rsync, remount, SIGCONT, gdb chdir
)

// Methods lists every method, livemig's first.
var Methods = []string{MethodLivemig, MethodLivemigRemount, MethodGDB, MethodRsyncRemount}

// Peers are the manual recipes, each optional.
var Peers = []string{MethodGDB, MethodRsyncRemount}

// remounts tells whether a method leaves the new filesystem at SRC's path (so the
// processes keep their paths) rather than re-pointing them to DST's.
func remounts(method string) bool {
	return method == MethodLivemigRemount || method == MethodRsyncRemount
}

// Missing returns why a method cannot run on this machine ("" if it can).
func Missing(method string) string {
	need := map[string][]string{MethodGDB: {"gdb", "cp", "sync"}, MethodRsyncRemount: {"rsync"}}[method]
	for _, tool := range need {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	return ""
}

// Window is the interval within which a process was stopped by a migration
// (CLOCK_MONOTONIC ns). For livemig it is the freeze-to-resume interval of its report;
// for a recipe, the interval from the first action that can stop the process to the
// end of the last.
type Window struct {
	From int64 `json:"from_ns"`
	To   int64 `json:"to_ns"`
}

// migration is what a method did: when, and the window of each process.
type migration struct {
	start, end int64
	windows    map[int]Window
	reported   map[int]int64 // pause per pid as the method itself reports it (livemig)
	notes      []string
	report     *cutover.Report
}

// env is what a method works on.
type env struct {
	st      *Storage
	wl      *Workload
	tmp     string // scratch directory for command files (not under either storage)
	livemig string // the livemig binary
}

// errUnavailable marks a method that this build or machine cannot run; the run is
// reported as skipped, with the reason.
type errUnavailable struct{ why string }

func (e errUnavailable) Error() string { return e.why }

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func runMethod(ctx context.Context, method string, e *env) (*migration, error) {
	switch method {
	case MethodLivemig, MethodLivemigRemount:
		return runLivemig(ctx, e, method == MethodLivemigRemount)
	case MethodGDB:
		return runGDBRecipe(ctx, e)
	case MethodRsyncRemount:
		return runRsyncRemount(ctx, e)
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

// command runs a helper program bound to ctx; stdout is returned, stderr is in the error.
func command(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C is bench's to handle
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// ---- livemig ----

// runLivemig drives livemig as a user would: a mirror pass first (livemig sync --once),
// then livemig cutover --json [--remount] SRC DST.
func runLivemig(ctx context.Context, e *env, remount bool) (*migration, error) {
	m := &migration{start: monoNow(), windows: map[int]Window{}, reported: map[int]int64{}}
	if _, err := command(ctx, e.livemig, "sync", "--once", e.st.Src, e.st.Dst); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		why := "livemig sync is not in this build"
		if !strings.Contains(err.Error(), "unknown command") {
			why = "livemig sync --once failed (" + firstLine(err.Error(), 200) + ")"
		}
		m.notes = append(m.notes, why+": tree pre-copied with cp -a")
		if _, err := command(ctx, "cp", "-a", e.st.Src+"/.", e.st.Dst+"/"); err != nil {
			return nil, err
		}
	}
	args := []string{"cutover", "--json"}
	if remount {
		args = append(args, "--remount")
	}
	args = append(args, e.st.Src, e.st.Dst)
	cmd := exec.CommandContext(ctx, e.livemig, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	m.end = monoNow()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if code == 2 && strings.Contains(stderr.String(), "unknown command") {
		return nil, errUnavailable{`livemig cutover is not in this build ("unknown command")`}
	}
	var rep cutover.Report // the document `livemig cutover --json` prints
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("%s %s: exit %d (%v), report does not parse: %v; stderr: %s",
			e.livemig, strings.Join(args, " "), code, runErr, err, lastLines(stderr.String(), 5))
	}
	m.report = &rep
	switch code {
	case 0:
	case 3:
		m.notes = append(m.notes, fmt.Sprintf("done with %d leftover(s)", len(rep.Leftovers)))
	default:
		return m, fmt.Errorf("livemig cutover exit %d, result %q: %s", code, rep.Result, rep.Error)
	}
	for _, p := range rep.Processes {
		if p.FrozenNs > 0 && p.ResumedNs >= p.FrozenNs {
			m.windows[p.PID] = Window{p.FrozenNs, p.ResumedNs}
		}
		m.reported[p.PID] = p.PauseNs
	}
	for _, pid := range e.wl.PIDs() {
		if _, ok := m.windows[pid]; !ok {
			m.windows[pid] = Window{m.start, m.end}
			m.notes = append(m.notes, fmt.Sprintf("pid %d: no freeze/resume instants in the report; window = the whole run", pid))
		}
	}
	return m, nil
}

// ---- seed 000: the gdb recipe ----

// openUnder lists the fds of pid whose target lies under dir, by number.
func openUnder(pid int, dir string) (map[int]string, error) {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	out := map[int]string{}
	for _, ent := range ents {
		n, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(fdDir + "/" + ent.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if under(target, dir) {
			out[n] = target
		}
	}
	return out, nil
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// moved maps a path under from to the same place under to.
func moved(p, from, to string) string { return to + strings.TrimPrefix(p, from) }

// gdbArgs are the options every gdb of the recipes gets: no init files, no debuginfod
// lookups over the network (they would stretch the pause by seconds), batch mode.
func gdbArgs(pid int) []string {
	return []string{"-nx", "-q", "-batch", "-iex", "set debuginfod enabled off", "-p", strconv.Itoa(pid)}
}

// gdbScript is seed 000's session for one process, steps 3 to 6, as written in the seed
// (current gdb wants the return type of a libc function cast, as seed 001 does):
// fsync every fd, sync, copy the process's files to the new storage, chdir, then for
// each fd fcntl(F_GETFL), open the new path with those flags, lseek to the same offset,
// dup2 onto the old number, close.
func gdbScript(fds map[int]string, cwd, src, dst string) string {
	var b strings.Builder
	b.WriteString("set confirm off\nset pagination off\n")
	nums := make([]int, 0, len(fds))
	for n := range fds {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	for _, n := range nums {
		fmt.Fprintf(&b, "call (int) fsync(%d)\n", n)
	}
	b.WriteString("shell sync\n")
	byDir := map[string][]string{}
	for _, n := range nums {
		if fi, err := os.Stat(fds[n]); err != nil || !fi.IsDir() { // a directory fd needs no copy
			d := filepath.Dir(moved(fds[n], src, dst))
			byDir[d] = append(byDir[d], shellQuote(fds[n]))
		}
	}
	dirs := make([]string, 0, len(byDir))
	for d := range byDir {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		fmt.Fprintf(&b, "shell mkdir -p %s && cp -p %s %s/\n", shellQuote(d), strings.Join(byDir[d], " "), shellQuote(d))
	}
	if under(cwd, src) {
		fmt.Fprintf(&b, "call (int) chdir(%s)\n", cString(moved(cwd, src, dst)))
	}
	for _, n := range nums {
		fmt.Fprintf(&b, "set var $oldfd = %d\n", n)
		b.WriteString("call (int) fcntl($oldfd, 3)\n")
		fmt.Fprintf(&b, "call (int) open(%s, $)\n", cString(moved(fds[n], src, dst)))
		b.WriteString("set var $newfd = $\n")
		b.WriteString("call (long) lseek($oldfd, 0, 1)\n")
		b.WriteString("call (long) lseek($newfd, $, 0)\n")
		b.WriteString("call (int) dup2($newfd, $oldfd)\n")
		b.WriteString("call (int) close($newfd)\n")
	}
	b.WriteString("detach\nquit\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// cString quotes s as a C string literal for gdb.
func cString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c >= 0x7f:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// runGDBRecipe is seed 000 on every process, one after another. Step 4's copy of the
// tree is done once up front (cp -a), then each process's own open files are copied
// again while gdb holds it stopped, so that no line written meanwhile is lost.
func runGDBRecipe(ctx context.Context, e *env) (*migration, error) {
	m := &migration{start: monoNow(), windows: map[int]Window{}}
	if _, err := command(ctx, "cp", "-a", e.st.Src+"/.", e.st.Dst+"/"); err != nil {
		return nil, err
	}
	for _, pid := range e.wl.PIDs() {
		fds, err := openUnder(pid, e.st.Src)
		if err != nil {
			return m, err
		}
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err != nil {
			return m, fmt.Errorf("cwd of pid %d: %w", pid, err)
		}
		script := filepath.Join(e.tmp, fmt.Sprintf("seed000-%d.gdb", pid))
		if err := os.WriteFile(script, []byte(gdbScript(fds, cwd, e.st.Src, e.st.Dst)), 0o644); err != nil {
			return m, fmt.Errorf("write %s: %w", script, err)
		}
		from := monoNow()
		out, err := command(ctx, "gdb", append(gdbArgs(pid), "-x", script)...)
		m.windows[pid] = Window{from, monoNow()}
		if err != nil {
			return m, fmt.Errorf("seed 000 on pid %d: %w", pid, err)
		}
		if left, _ := openUnder(pid, e.st.Src); len(left) > 0 {
			m.notes = append(m.notes, fmt.Sprintf("pid %d: %d fd(s) still on the old storage after gdb: %s", pid, len(left), lastLines(string(out), 3)))
		}
	}
	m.end = monoNow()
	return m, nil
}

// ---- seed 001: SIGSTOP + rsync + remount + SIGCONT + gdb chdir ----

// runRsyncRemount is seed 001: stop every process, rsync the tree to the new storage,
// mount the new storage on the old path, continue the processes, then refresh each
// one's working directory with gdb. The seed does chdir to the tree's root; here each
// process gets its own former working directory back (same path, new filesystem), which
// is what the seed means for processes whose cwd is below the root. Open files stay on
// the old filesystem: the seed does not move them, and the analysis shows it.
func runRsyncRemount(ctx context.Context, e *env) (*migration, error) {
	m := &migration{start: monoNow(), windows: map[int]Window{}}
	pids := e.wl.PIDs()
	cwds := map[int]string{}
	for _, pid := range pids {
		cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
		if err != nil {
			return m, fmt.Errorf("cwd of pid %d: %w", pid, err)
		}
		cwds[pid] = cwd
	}
	stopped := map[int]int64{}
	resume := func() {
		for _, pid := range pids {
			if _, ok := stopped[pid]; ok {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			resume()
			return m, fmt.Errorf("SIGSTOP pid %d: %w", pid, err)
		}
		stopped[pid] = monoNow()
	}
	_, err := command(ctx, "rsync", "-aKx", "--delete", e.st.Src+"/", e.st.Dst+"/")
	if err == nil {
		err = e.st.Remount()
	}
	resume()
	if err != nil {
		return m, fmt.Errorf("seed 001: %w", err)
	}
	gdbOK := Missing(MethodGDB) == ""
	if !gdbOK {
		m.notes = append(m.notes, "gdb is not installed: working directories not refreshed")
	}
	for _, pid := range pids {
		if gdbOK && under(cwds[pid], e.st.Src) {
			if _, err := command(ctx, "gdb", append(gdbArgs(pid), "-ex", "call (int) chdir("+cString(cwds[pid])+")")...); err != nil {
				return m, fmt.Errorf("seed 001 chdir of pid %d: %w", pid, err)
			}
		}
		m.windows[pid] = Window{stopped[pid], monoNow()}
	}
	m.end = monoNow()
	if n := countOpenUnderOld(pids, e.st); n > 0 {
		m.notes = append(m.notes, fmt.Sprintf("%d open file(s) left on the old filesystem", n))
	}
	return m, nil
}

// countOpenUnderOld counts the fds of pids that are still on the old filesystem after a
// remount: same path as before, but the old device.
func countOpenUnderOld(pids []int, st *Storage) int {
	var old unix.Stat_t
	if err := unix.Stat(st.OldView, &old); err != nil {
		return 0
	}
	n := 0
	for _, pid := range pids {
		fds, _ := openUnder(pid, st.Src)
		for num := range fds {
			var s unix.Stat_t
			if unix.Stat("/proc/"+strconv.Itoa(pid)+"/fd/"+strconv.Itoa(num), &s) == nil && s.Dev == old.Dev {
				n++
			}
		}
	}
	return n
}
