package cutover

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Kind says what ties a process to SRC, and so how the swap must treat it.
type Kind string

const (
	KindFile       Kind = "file"        // regular file fd: reopen on DST, same flags and offset
	KindDir        Kind = "dir"         // directory fd
	KindDeleted    Kind = "deleted"     // fd of a file whose name is gone: copy its content
	KindFIFO       Kind = "fifo"        // named pipe under SRC: leftover
	KindSocket     Kind = "socket"      // unix socket bound to a name under SRC: leftover
	KindDevice     Kind = "device"      // device node under SRC: leftover
	KindOther      Kind = "other"       // anything else reached through SRC (an O_PATH symlink)
	KindSharedMap  Kind = "shared-map"  // MAP_SHARED file mapping: remap onto the new file
	KindPrivateMap Kind = "private-map" // MAP_PRIVATE file mapping: remap unless written
	KindExe        Kind = "exe"         // the running executable: leftover
	KindCwd        Kind = "cwd"
	KindRoot       Kind = "root"
)

// Source is SRC as discovery resolved it.
type Source struct {
	Path       string `json:"path"` // absolute, symlinks resolved: how /proc prints it
	Dev        uint64 `json:"dev"`  // st_dev of SRC
	MountID    uint64 `json:"mount_id"`
	MountPoint bool   `json:"mount_point"` // SRC is the root of its mount
	FSType     string `json:"fs_type"`
	// FSPath is SRC's directory inside its filesystem. An item is under SRC when it is on
	// the same filesystem and its own path inside the filesystem lies below FSPath: that
	// holds whichever mount (a bind mount elsewhere, another namespace) it was reached by.
	FSPath string `json:"fs_path"`
}

// Node is the file an item refers to.
type Node struct {
	// Path as /proc shows it, " (deleted)" marker removed; reached through a bind mount
	// or in another mount namespace it may not start with SRC: use Rel.
	Path    string `json:"path"`
	Rel     string `json:"rel"` // path below SRC, "" for SRC itself: where it goes under DST
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Mode    uint32 `json:"mode"` // st_mode: type and permission bits
	Nlink   uint32 `json:"nlink"`
	Size    int64  `json:"size"`
	MountID uint64 `json:"mount_id"`
	Deleted bool   `json:"deleted,omitempty"` // its name is unlinked (content only reachable via /proc)
}

// FD is an open file descriptor under SRC.
type FD struct {
	// TID is the task whose fd table holds it: the pid, unless a thread unshared its
	// table (clone without CLONE_FILES); inject must act on that task.
	TID  int  `json:"tid"`
	Num  int  `json:"fd"`
	Kind Kind `json:"kind"`
	Node
	Flags       int    `json:"flags"` // open(2) flags as fdinfo reports them, without O_CLOEXEC
	CloseOnExec bool   `json:"cloexec"`
	Pos         int64  `json:"pos"`
	Locks       []Lock `json:"locks,omitempty"`        // held through this fd: taken again after the swap
	SocketInode uint64 `json:"socket_inode,omitempty"` // for KindSocket: the "socket:[N]" inode
}

// Mapping is a file mapping under SRC.
type Mapping struct {
	Start  uint64 `json:"start"`
	End    uint64 `json:"end"`
	Perms  string `json:"perms"` // as maps prints them: "rw-s"
	Prot   int    `json:"prot"`  // PROT_READ|PROT_WRITE|PROT_EXEC
	Shared bool   `json:"shared"`
	Offset uint64 `json:"offset"`
	Kind   Kind   `json:"kind"`
	Node
	// WrittenBytes of a private mapping are copy-on-write copies (smaps Anonymous+Swap):
	// data that exists in no file, so the mapping cannot be moved without losing it.
	WrittenBytes uint64 `json:"written_bytes,omitempty"`
}

// Location is a cwd, root or exe under SRC.
type Location struct {
	TID  int  `json:"tid"` // the task it belongs to: the pid unless a thread unshared CLONE_FS
	Kind Kind `json:"kind"`
	Node
}

// Leftover is something under SRC that a cutover cannot move, and why.
type Leftover struct {
	TID    int    `json:"tid"`
	What   string `json:"what"` // "exe", "fd 7", "map 7f00-7f10", "cwd of thread 12"
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Target names one process for good: a pid alone may be reused after the process exits.
type Target struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // /proc/PID/stat field 22, clock ticks after boot
}

// TargetOf names the process that has pid now.
func TargetOf(pid int) (Target, error) {
	st, err := readProcStat("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Target{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return Target{PID: pid, StartTime: st.StartTime}, nil
}

// Process is a process that uses SRC, with everything of it that lies under SRC.
type Process struct {
	Target
	PPID      int        `json:"ppid"`
	Comm      string     `json:"comm"`
	Cmdline   []string   `json:"cmdline"`
	State     string     `json:"state"`      // at discovery: "R", "S", "T" (stopped), ...
	TracerPID int        `json:"tracer_pid"` // non-zero: already ptraced by that pid
	Threads   []int      `json:"threads"`
	Cwd       []Location `json:"cwd,omitempty"`  // one per fs_struct: normally one, of the pid
	Root      []Location `json:"root,omitempty"` // idem
	Exe       *Location  `json:"exe,omitempty"`
	FDs       []FD       `json:"fds,omitempty"`
	Maps      []Mapping  `json:"maps,omitempty"`
	Leftovers []Leftover `json:"leftovers,omitempty"`
}

// Discovery is every process that uses SRC, by pid.
type Discovery struct {
	Source    Source    `json:"source"`
	Processes []Process `json:"processes"`
	// Unreadable are processes /proc would not show us (a security module, or a
	// process with capabilities livemig lacks): whether they use SRC is unknown.
	Unreadable []Unreadable `json:"unreadable,omitempty"`
}

// Unreadable is a process discovery could not look into.
type Unreadable struct {
	PID   int    `json:"pid"`
	Comm  string `json:"comm"`
	Error string `json:"error"`
}

// Targets lists the processes of d.
func (d *Discovery) Targets() []Target {
	out := make([]Target, len(d.Processes))
	for i, p := range d.Processes {
		out[i] = p.Target
	}
	return out
}

// Leftovers lists every process's leftovers.
func (d *Discovery) Leftovers() []Leftover {
	var out []Leftover
	for _, p := range d.Processes {
		out = append(out, p.Leftovers...)
	}
	return out
}

// Options narrow discovery.
type Options struct {
	// PIDs, if set, limits discovery to these processes (all their threads). A tid is
	// taken as its process. FreezeUsers then freezes only them: a child one of them
	// forks is not among them, so it is neither frozen nor moved.
	PIDs []int
	// Exclude is never reported (the guardian; livemig itself always is excluded).
	Exclude []int
}

// NoSuchProcessError is a requested pid that does not exist.
type NoSuchProcessError struct{ PID int }

func (e *NoSuchProcessError) Error() string { return fmt.Sprintf("pid %d: no such process", e.PID) }

// NotUsingSourceError is a requested pid that has nothing under SRC.
type NotUsingSourceError struct {
	PID int
	Src string
}

func (e *NotUsingSourceError) Error() string {
	return fmt.Sprintf("pid %d does not use %s (no fd, cwd, root, exe or mapping under it)", e.PID, e.Src)
}

// ResolveSource checks SRC and finds its filesystem and mount.
func ResolveSource(src string) (Source, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return Source{}, fmt.Errorf("source %s: %w", src, err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return Source{}, fmt.Errorf("source %s: %w", src, err)
	}
	stx, err := statxFollow(abs)
	if err != nil {
		return Source{}, fmt.Errorf("source %s: %w", abs, err)
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFDIR {
		return Source{}, fmt.Errorf("source %s: not a directory", abs)
	}
	mounts, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return Source{}, fmt.Errorf("source %s: %w", abs, err)
	}
	s := Source{Path: abs, Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), MountID: stx.Mnt_id}
	m, ok := mountByID(mounts, stx.Mnt_id)
	if !ok {
		return Source{}, fmt.Errorf("source %s: mount %d not in /proc/self/mountinfo", abs, stx.Mnt_id)
	}
	rel, ok := relUnder(abs, m.MountPoint)
	if !ok {
		return Source{}, fmt.Errorf("source %s: not below its mount point %s", abs, m.MountPoint)
	}
	s.MountPoint = rel == ""
	s.FSType = m.FSType
	s.FSPath = joinRel(m.Root, rel)
	return s, nil
}

// Discover finds every process, but livemig itself and kernel threads, whose fds, cwd,
// root, exe or file mappings lie under src. Processes that exit meanwhile are skipped.
// A requested pid that does not exist, or does not use src, is an error
// (*NoSuchProcessError, *NotUsingSourceError).
func Discover(src string, opts Options) (*Discovery, error) {
	s, err := ResolveSource(src)
	if err != nil {
		return nil, err
	}
	d, _, err := discover(s, opts, true, nil)
	return d, err
}

// discover is Discover for a resolved source; strict=false lets requested pids be gone
// (a rescan, after some of them may have exited). Processes in skip, found not using
// SRC by an earlier pass, are passed over. It returns the processes it found not using
// SRC, for the next pass to skip.
func discover(s Source, opts Options, strict bool, skip map[int]bool) (*Discovery, map[int]bool, error) {
	sc, err := newScanner(s, opts)
	if err != nil {
		return nil, nil, err
	}
	sc.skip = skip
	pids, err := sc.candidatePIDs(opts.PIDs, strict)
	if err != nil {
		return nil, nil, err
	}
	// Processes are scanned a few at a time: the scan is mostly waiting on /proc, and the
	// rescans after the freeze run inside the pause.
	procs := make([]*Process, len(pids))
	unreadable := make([]error, len(pids))
	var g errgroup.Group
	g.SetLimit(2 * runtime.NumCPU())
	for i, pid := range pids {
		g.Go(func() error {
			p, err := sc.scanProcess(pid)
			if errors.Is(err, fs.ErrPermission) {
				unreadable[i] = err
				return nil
			}
			procs[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	d := &Discovery{Source: s}
	for i, pid := range pids {
		if err := unreadable[i]; err != nil {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			d.Unreadable = append(d.Unreadable, Unreadable{PID: pid, Comm: strings.TrimSpace(string(comm)), Error: err.Error()})
		}
		if procs[i] != nil {
			d.Processes = append(d.Processes, *procs[i])
		}
	}
	if strict {
		for _, want := range opts.PIDs {
			if !d.has(tgidOf(want)) {
				return nil, nil, &NotUsingSourceError{PID: want, Src: s.Path}
			}
		}
	}
	return d, sc.nonUsers, nil
}

func (sc *scanner) markNonUser(pid int) {
	sc.mu.Lock()
	sc.nonUsers[pid] = true
	sc.mu.Unlock()
}

func (d *Discovery) has(pid int) bool {
	for _, p := range d.Processes {
		if p.PID == pid {
			return true
		}
	}
	return false
}

// tgidOf maps a thread id to its process id (a tid is not listed in /proc but resolves).
func tgidOf(tid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return tid
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return tid
}

// scanner holds what one discovery pass shares between processes: the mount tables and
// socket bindings of each namespace seen, read once.
type scanner struct {
	src     Source
	self    int
	exclude map[int]bool
	selfMnt uint64 // our mount namespace inode
	// srcMountDev is the device mountinfo gives SRC's mount; it differs from st_dev on
	// filesystems with per-subvolume devices (btrfs).
	srcMountDev uint64
	mounts      map[uint64][]mount           // by mount namespace inode
	bindings    map[uint64]map[uint64]string // net namespace inode -> socket inode -> path
	// skip are pids known not to use SRC: not scanned again. By pid alone, because
	// reading /proc/PID/stat for the start time is most of a pass's cost, and the kernel
	// hands out pids cyclically, so a pid is not reused within the milliseconds between
	// two passes short of cycling through all of pid_max.
	skip     map[int]bool
	nonUsers map[int]bool // scanned and found not using SRC

	mu sync.Mutex // guards mounts, bindings and nonUsers: processes are scanned in parallel
}

func newScanner(s Source, opts Options) (*scanner, error) {
	sc := &scanner{
		src:      s,
		self:     os.Getpid(),
		exclude:  map[int]bool{},
		nonUsers: map[int]bool{},
		mounts:   map[uint64][]mount{},
		bindings: map[uint64]map[uint64]string{},
	}
	for _, pid := range opts.Exclude {
		sc.exclude[pid] = true
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &st); err != nil {
		return nil, fmt.Errorf("own mount namespace: %w", err)
	}
	sc.selfMnt = st.Ino
	v, err := sc.viewOf(sc.self)
	if err != nil {
		return nil, fmt.Errorf("own mounts: %w", err)
	}
	if m, ok := mountByID(v.mounts, s.MountID); ok {
		sc.srcMountDev = m.Dev
	}
	return sc, nil
}

// candidatePIDs lists the processes to scan: the requested ones (threads mapped to their
// process), or every process in /proc.
func (sc *scanner) candidatePIDs(want []int, strict bool) ([]int, error) {
	if len(want) > 0 {
		var out []int
		seen := map[int]bool{}
		for _, pid := range want {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil || pid <= 0 {
				if !strict {
					continue
				}
				return nil, &NoSuchProcessError{PID: pid}
			}
			tgid := tgidOf(pid)
			if !seen[tgid] {
				seen[tgid] = true
				out = append(out, tgid)
			}
		}
		return out, nil
	}
	return listPIDs()
}

// listPIDs lists the processes (thread group leaders) in /proc, in increasing order.
func listPIDs() ([]int, error) {
	pids, err := numericEntries("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	return pids, nil
}

// numericEntries lists the entries of a /proc directory that are numbers (pids, tids,
// fds), in numeric order.
func numericEntries(dir string) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(names))
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// scanProcess returns pid's use of SRC, or nil if it has none, has exited, is a kernel
// thread or is excluded.
func (sc *scanner) scanProcess(pid int) (*Process, error) {
	if pid == sc.self || sc.exclude[pid] {
		return nil, nil
	}
	if sc.skip[pid] {
		sc.markNonUser(pid)
		return nil, nil
	}
	p, err := sc.scanProcessOrGone(pid)
	if gone(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discover pid %d: %w", pid, err)
	}
	return p, nil
}

func (sc *scanner) scanProcessOrGone(pid int) (*Process, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	st, err := readProcStat(dir + "/stat")
	if err != nil {
		return nil, err
	}
	target := Target{PID: pid, StartTime: st.StartTime}
	if st.Flags&pfKthread != 0 {
		sc.markNonUser(pid)
		return nil, nil
	}
	p := &Process{Target: target, PPID: st.PPID, Comm: st.Comm, State: string(st.State)}
	if p.Threads, err = listTasks(pid); err != nil {
		return nil, err
	}
	view, err := sc.viewOf(pid)
	if err != nil {
		return nil, err
	}

	// Threads share the fd table and the fs_struct unless one was cloned without
	// CLONE_FILES / CLONE_FS; kcmp tells, so a thread is only read when it differs.
	for i, tid := range p.Threads {
		tdir := dir + "/task/" + strconv.Itoa(tid)
		ownFiles, ownFS := i == 0, i == 0
		if i > 0 {
			ownFiles = !sameKernelObject(pid, tid, kcmpFiles)
			ownFS = !sameKernelObject(pid, tid, kcmpFS)
		}
		if ownFiles {
			if err := sc.scanFDs(p, view, tid, tdir); err != nil && !gone(err) {
				return nil, err
			}
		}
		if ownFS {
			for _, k := range []Kind{KindCwd, KindRoot} {
				loc, err := sc.scanLocation(view, tid, tdir+"/"+string(k), k)
				if err != nil && !gone(err) {
					return nil, err
				}
				if loc == nil {
					continue
				}
				if k == KindCwd {
					p.Cwd = append(p.Cwd, *loc)
				} else {
					p.Root = append(p.Root, *loc)
				}
			}
		}
	}
	exe, err := sc.scanLocation(view, pid, dir+"/exe", KindExe)
	if err != nil && !gone(err) {
		return nil, err
	}
	if exe != nil {
		p.Exe = exe
		p.Leftovers = append(p.Leftovers, Leftover{TID: pid, What: "exe", Path: exe.Path,
			Reason: "the running executable cannot be replaced; it keeps the old filesystem busy until the process execs or exits"})
	}
	if err := sc.scanMaps(p, view, dir); err != nil && !gone(err) {
		return nil, err
	}
	if len(p.Cwd) == 0 && len(p.Root) == 0 && p.Exe == nil && len(p.FDs) == 0 && len(p.Maps) == 0 {
		sc.markNonUser(pid)
		return nil, nil
	}
	if b, err := os.ReadFile(dir + "/cmdline"); err == nil {
		p.Cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
	p.TracerPID = tracerPID(dir)
	return p, nil
}

func listTasks(pid int) ([]int, error) {
	tids, err := numericEntries("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, err
	}
	// The leader first: it is the task whose tables the others are compared against.
	for i, tid := range tids {
		if tid == pid {
			tids[0], tids[i] = tids[i], tids[0]
		}
	}
	return tids, nil
}

func tracerPID(dir string) int {
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// kcmp(2) types, include/uapi/linux/kcmp.h (x/sys/unix has no kcmp).
const (
	kcmpFiles = 2
	kcmpFS    = 3
)

// sameKernelObject reports whether two tasks share the fd table or fs_struct. When kcmp
// cannot tell (kernel without CONFIG_KCMP, task gone), it says no, so the thread is read.
func sameKernelObject(pid1, pid2 int, kind int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(kind), 0, 0, 0)
	return errno == 0 && r == 0
}

// view is how paths that /proc prints for one process are looked up from livemig: in
// its own mount namespace directly, otherwise through /proc/PID/root.
type view struct {
	prefix string
	mounts []mount
}

func (sc *scanner) viewOf(pid int) (view, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	var st unix.Stat_t
	if err := unix.Stat(dir+"/ns/mnt", &st); err != nil {
		return view{}, err
	}
	v := view{}
	if st.Ino != sc.selfMnt {
		v.prefix = dir + "/root"
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	mounts, ok := sc.mounts[st.Ino]
	if !ok {
		var err error
		src := dir + "/mountinfo"
		if st.Ino == sc.selfMnt {
			src = "/proc/self/mountinfo"
		}
		if mounts, err = readMountInfo(src); err != nil {
			return view{}, err
		}
		sc.mounts[st.Ino] = mounts
	}
	v.mounts = mounts
	return v, nil
}

// mayBeUnder is the cheap first filter, before any stat: can path, in view v, lie under
// SRC? Only if some mount of SRC's filesystem has it below its mount point at a place
// inside SRC's directory of the filesystem; statx then settles which mount it really is
// on (a different filesystem may be mounted further down). escaped says path is as maps
// prints it (newlines escaped), so the mount table is escaped alike.
func (sc *scanner) mayBeUnder(v view, path string, escaped bool) bool {
	esc := func(s string) string { return s }
	if escaped {
		esc = escapeNewlines
	}
	for _, m := range v.mounts {
		if m.Dev != sc.srcMountDev && m.Dev != sc.src.Dev {
			continue
		}
		if rel, ok := relUnder(path, esc(m.MountPoint)); ok {
			if _, ok := relUnder(joinRel(esc(m.Root), rel), esc(sc.src.FSPath)); ok {
				return true
			}
		}
	}
	_, ok := relUnder(path, esc(sc.src.Path))
	return ok
}

// locate decides whether the file at path (as /proc printed it, in view v), whose
// statx is stx, lies under SRC, and returns its Node if so.
func (sc *scanner) locate(v view, path string, stx *unix.Statx_t) (Node, bool) {
	n := Node{
		Path:    path,
		Dev:     unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		Ino:     stx.Ino,
		Mode:    uint32(stx.Mode),
		Nlink:   stx.Nlink,
		Size:    int64(stx.Size),
		MountID: stx.Mnt_id,
	}
	if n.Dev != sc.src.Dev {
		return n, false
	}
	if m, ok := mountByID(v.mounts, stx.Mnt_id); ok {
		if rel, ok := relUnder(path, m.MountPoint); ok {
			n.Rel, ok = relUnder(joinRel(m.Root, rel), sc.src.FSPath)
			return n, ok
		}
	}
	// Unknown mount (it went away, or /proc printed a path outside it): fall back to
	// the path.
	rel, ok := relUnder(path, sc.src.Path)
	n.Rel = rel
	return n, ok
}

const deletedMarker = " (deleted)"

// resolveDeleted tells from a /proc magic link's text raw whether the file's name is
// gone. The kernel appends " (deleted)" to an unlinked name, but a real name may end so
// too: the name counts as real when it still leads to the same inode.
func resolveDeleted(v view, raw string, stx *unix.Statx_t) (path string, deleted bool) {
	if !strings.HasSuffix(raw, deletedMarker) || !strings.HasPrefix(raw, "/") {
		return raw, false
	}
	if stx.Nlink > 0 {
		var st unix.Stat_t
		if unix.Lstat(v.prefix+raw, &st) == nil && st.Ino == stx.Ino &&
			st.Dev == unix.Mkdev(stx.Dev_major, stx.Dev_minor) {
			return raw, false
		}
	}
	return strings.TrimSuffix(raw, deletedMarker), true
}

// nodeUnder stats what the magic link points at and returns its Node if it lies under
// SRC; raw is the link's text, read just before.
func (sc *scanner) nodeUnder(v view, link, raw string) (*Node, error) {
	stx, err := statxFollow(link)
	if err != nil {
		return nil, err
	}
	path, deleted := resolveDeleted(v, raw, &stx)
	n, ok := sc.locate(v, path, &stx)
	if !ok {
		return nil, nil
	}
	n.Deleted = deleted
	return &n, nil
}

func (sc *scanner) scanLocation(v view, tid int, link string, kind Kind) (*Location, error) {
	raw, err := os.Readlink(link)
	if err != nil {
		return nil, err
	}
	if !sc.mayBeUnder(v, strings.TrimSuffix(raw, deletedMarker), false) {
		return nil, nil
	}
	n, err := sc.nodeUnder(v, link, raw)
	if n == nil || err != nil {
		return nil, err
	}
	return &Location{TID: tid, Kind: kind, Node: *n}, nil
}

func (sc *scanner) scanFDs(p *Process, v view, tid int, taskDir string) error {
	nums, err := numericEntries(taskDir + "/fd")
	if err != nil {
		return err
	}
	for _, num := range nums {
		fd, err := sc.scanFD(p, v, tid, taskDir, num)
		if gone(err) {
			continue // closed while we looked
		}
		if err != nil {
			return fmt.Errorf("fd %d of task %d: %w", num, tid, err)
		}
		if fd != nil {
			p.FDs = append(p.FDs, *fd)
		}
	}
	return nil
}

func (sc *scanner) scanFD(p *Process, v view, tid int, taskDir string, num int) (*FD, error) {
	link := taskDir + "/fd/" + strconv.Itoa(num)
	raw, err := os.Readlink(link)
	if err != nil {
		return nil, err
	}
	fd := &FD{TID: tid, Num: num}
	if strings.HasPrefix(raw, "socket:[") {
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(raw, "socket:["), "]"), 10, 64)
		if err != nil {
			return nil, nil
		}
		bound, err := sc.boundUnder(v, p.PID, ino)
		if err != nil || bound == nil {
			return nil, err
		}
		fd.Kind, fd.SocketInode, fd.Node = KindSocket, ino, *bound
	} else {
		if !strings.HasPrefix(raw, "/") || !sc.mayBeUnder(v, strings.TrimSuffix(raw, deletedMarker), false) {
			return nil, nil // pipe:[..], anon_inode:..., or plainly elsewhere
		}
		n, err := sc.nodeUnder(v, link, raw)
		if n == nil || err != nil {
			return nil, err
		}
		fd.Node, fd.Kind = *n, kindOfFD(n.Mode, n.Deleted)
	}
	info, err := readFDInfo(taskDir + "/fdinfo/" + strconv.Itoa(num))
	if err != nil {
		return nil, err
	}
	fd.Pos, fd.CloseOnExec, fd.Flags, fd.Locks = info.Pos, info.Flags&unix.O_CLOEXEC != 0, info.Flags&^unix.O_CLOEXEC, info.Locks
	if reason := fdLeftoverReason(fd); reason != "" {
		p.Leftovers = append(p.Leftovers, Leftover{TID: tid, What: "fd " + strconv.Itoa(num), Path: fd.Path, Reason: reason})
	}
	return fd, nil
}

func kindOfFD(mode uint32, deleted bool) Kind {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		if deleted {
			return KindDeleted
		}
		return KindFile
	case unix.S_IFDIR:
		return KindDir
	case unix.S_IFIFO:
		return KindFIFO
	case unix.S_IFCHR, unix.S_IFBLK:
		return KindDevice
	case unix.S_IFSOCK:
		return KindSocket
	}
	return KindOther
}

func fdLeftoverReason(fd *FD) string {
	switch fd.Kind {
	case KindFIFO:
		return "named pipe under SRC: its buffered data and its peers stay on the old inode"
	case KindSocket:
		return "unix socket bound to a name under SRC: a copied name is not bound, so new clients would find nobody listening"
	case KindDevice:
		return "device node under SRC: reopening it could reset the device's state"
	case KindOther:
		return "neither file, directory, pipe, socket nor device"
	case KindDir:
		if fd.Deleted {
			return "directory removed from SRC: it has no content to move"
		}
	}
	return ""
}

// boundUnder returns the node of the name under SRC that the socket with inode ino is
// bound to, or nil if it is not bound under SRC.
func (sc *scanner) boundUnder(v view, pid int, ino uint64) (*Node, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	var st unix.Stat_t
	if err := unix.Stat(dir+"/ns/net", &st); err != nil {
		return nil, err
	}
	sc.mu.Lock()
	byInode, ok := sc.bindings[st.Ino]
	if !ok {
		list, err := readUnixBindings(dir + "/net/unix")
		if err != nil {
			sc.mu.Unlock()
			return nil, err
		}
		byInode = map[uint64]string{}
		for _, b := range list {
			if b.HoldsName {
				byInode[b.Inode] = b.Path
			}
		}
		sc.bindings[st.Ino] = byInode
	}
	sc.mu.Unlock()
	name, ok := byInode[ino]
	if !ok {
		return nil, nil
	}
	// A relative name was resolved against the binder's cwd at bind time; today's cwd
	// is the best guess left.
	lookup := v.prefix + name
	if !strings.HasPrefix(name, "/") {
		lookup = dir + "/cwd/" + name
		if cwd, err := os.Readlink(dir + "/cwd"); err == nil {
			name = filepath.Join(cwd, name)
		}
	}
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, lookup, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC,
		unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx)
	if err != nil {
		// The name was unlinked or replaced: only the text is left to judge by.
		rel, ok := relUnder(name, sc.src.Path)
		if !ok {
			return nil, nil
		}
		return &Node{Path: name, Rel: rel, Deleted: true}, nil
	}
	n, ok := sc.locate(v, name, &stx)
	if !ok {
		return nil, nil
	}
	return &n, nil
}

func (sc *scanner) scanMaps(p *Process, v view, dir string) error {
	entries, err := readMaps(dir + "/maps")
	if err != nil {
		return err
	}
	var written map[uint64]uint64
	for _, e := range entries {
		if e.Inode == 0 || !strings.HasPrefix(e.Path, "/") ||
			!sc.mayBeUnder(v, strings.TrimSuffix(e.Path, deletedMarker), true) {
			continue
		}
		link := dir + "/map_files/" + mapFilesName(e.Start, e.End)
		raw, err := os.Readlink(link)
		var n *Node
		if err == nil {
			n, err = sc.nodeUnder(v, link, raw)
		}
		if gone(err) {
			continue // unmapped meanwhile
		}
		if err != nil {
			return fmt.Errorf("mapping %x-%x: %w", e.Start, e.End, err)
		}
		if n == nil {
			continue
		}
		m := Mapping{Start: e.Start, End: e.End, Perms: e.Perms, Offset: e.Offset, Node: *n,
			Shared: e.Perms[3] == 's', Prot: protOf(e.Perms), Kind: KindPrivateMap}
		if m.Shared {
			m.Kind = KindSharedMap
		} else {
			if written == nil {
				if written, err = smapsWritten(dir + "/smaps"); err != nil {
					return err
				}
			}
			m.WrittenBytes = written[e.Start]
		}
		if m.WrittenBytes > 0 {
			p.Leftovers = append(p.Leftovers, Leftover{TID: p.PID, What: "map " + mapFilesName(e.Start, e.End), Path: n.Path,
				Reason: fmt.Sprintf("private mapping with %d bytes written (copy-on-write pages that exist in no file)", m.WrittenBytes)})
		}
		p.Maps = append(p.Maps, m)
	}
	return nil
}

func protOf(perms string) int {
	prot := unix.PROT_NONE
	if perms[0] == 'r' {
		prot |= unix.PROT_READ
	}
	if perms[1] == 'w' {
		prot |= unix.PROT_WRITE
	}
	if perms[2] == 'x' {
		prot |= unix.PROT_EXEC
	}
	return prot
}

func mountByID(mounts []mount, id uint64) (mount, bool) {
	for _, m := range mounts {
		if m.ID == id {
			return m, true
		}
	}
	return mount{}, false
}

// relUnder returns path relative to dir ("" for dir itself) if path is dir or below it
// on a component boundary: /srcdir is not under /src.
func relUnder(path, dir string) (string, bool) {
	if dir == "/" {
		return strings.TrimPrefix(path, "/"), strings.HasPrefix(path, "/")
	}
	if path == dir {
		return "", true
	}
	if rest, ok := strings.CutPrefix(path, dir); ok && strings.HasPrefix(rest, "/") {
		return rest[1:], true
	}
	return "", false
}

// joinRel is dir/rel without filepath.Join's cleaning, which would touch names that are
// legal but look special ("a/../b" cannot occur in /proc output, "a//b" cannot either).
func joinRel(dir, rel string) string {
	switch {
	case rel == "":
		return dir
	case dir == "/":
		return "/" + rel
	}
	return dir + "/" + rel
}
