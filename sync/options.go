package sync

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	stdsync "sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Options configure a mirror of Src onto Dst.
type Options struct {
	Src, Dst string
	// Jobs is how many workers walk and copy at once; 0 means one per CPU.
	Jobs int
	// Checksum compares file content instead of trusting equal size and mtime.
	Checksum bool
	// Delete removes at Dst what Src does not have (what a mirror does). The command
	// line sets it unless --no-delete; the zero value keeps extra entries.
	Delete bool
	// Excludes are rsync-style exclude rules (see ReadExcludeFile for the syntax). They
	// never apply to the paths given to Flush: what a cutover must move is moved.
	Excludes []string
	// Logger receives progress and per-path problems; nil discards them.
	Logger *slog.Logger
}

// config is Options checked and resolved.
type config struct {
	src, dst string // absolute, symlinks resolved
	jobs     int
	checksum bool
	delete   bool
	excl     *excluder
	log      *slog.Logger
}

// resolve checks the options. readOnly is for verify: DST must then exist, and need not
// be writable.
func (o Options) resolve(readOnly bool) (*config, error) {
	c := &config{jobs: o.Jobs, checksum: o.Checksum, delete: o.Delete, log: o.Logger}
	if c.jobs <= 0 {
		c.jobs = runtime.NumCPU()
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if c.excl, err = newExcluder(o.Excludes); err != nil {
		return nil, &InputError{Path: "--exclude", Reason: err.Error()}
	}
	if o.Src == "" || o.Dst == "" {
		return nil, &InputError{Path: `""`, Reason: "SRC and DST must both be given"}
	}
	src, err := filepath.Abs(o.Src)
	if err == nil {
		src, err = filepath.EvalSymlinks(src)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &InputError{Path: o.Src, Reason: "SRC does not exist"}
	}
	if err != nil {
		return nil, &InputError{Path: o.Src, Reason: err.Error()}
	}
	srcSt, err := os.Stat(src)
	if err != nil {
		return nil, &InputError{Path: o.Src, Reason: err.Error()}
	}
	if !srcSt.IsDir() {
		return nil, &InputError{Path: o.Src, Reason: "SRC is not a directory"}
	}
	dst, err := filepath.Abs(o.Dst)
	if err != nil {
		return nil, &InputError{Path: o.Dst, Reason: err.Error()}
	}
	// DST may not exist yet (it is created), but its parent must.
	writable := dst
	if st, err := os.Lstat(dst); err == nil || !errors.Is(err, fs.ErrNotExist) {
		if err != nil {
			return nil, &InputError{Path: o.Dst, Reason: err.Error()}
		}
		if dst, err = filepath.EvalSymlinks(dst); err != nil {
			return nil, &InputError{Path: o.Dst, Reason: err.Error()}
		}
		if st, err = os.Stat(dst); err != nil || !st.IsDir() {
			return nil, &InputError{Path: o.Dst, Reason: "DST exists and is not a directory"}
		}
		if os.SameFile(st, srcSt) {
			return nil, &InputError{Path: o.Dst, Reason: "SRC and DST are the same directory"}
		}
		writable = dst
	} else if readOnly {
		return nil, &InputError{Path: o.Dst, Reason: "DST does not exist"}
	} else {
		parent, err := filepath.EvalSymlinks(filepath.Dir(dst))
		if err != nil {
			return nil, &InputError{Path: o.Dst, Reason: "the parent directory of DST does not exist"}
		}
		dst = filepath.Join(parent, filepath.Base(dst))
		writable = parent
	}
	switch {
	case dst == src:
		return nil, &InputError{Path: o.Dst, Reason: "SRC and DST are the same directory"}
	case isUnder(dst, src):
		return nil, &InputError{Path: o.Dst, Reason: fmt.Sprintf("DST is inside SRC (%s)", src)}
	case isUnder(src, dst):
		return nil, &InputError{Path: o.Src, Reason: fmt.Sprintf("SRC is inside DST (%s)", dst)}
	}
	if err := unix.Access(writable, unix.W_OK|unix.X_OK); !readOnly && err != nil {
		return nil, &InputError{Path: o.Dst, Reason: fmt.Sprintf("DST is not writable (%s: %v)", writable, err)}
	}
	c.src, c.dst = src, dst
	return c, nil
}

// openRoots opens SRC and DST (creating DST when missing) as the directory descriptors
// every other call works from.
func (c *config) openRoots() (srcFD, dstFD int, err error) {
	srcFD, err = openSrc(unix.AT_FDCWD, c.src, openDirFlags)
	if err != nil {
		return -1, -1, fmt.Errorf("open SRC %s: %w", c.src, err)
	}
	if err := unix.Mkdir(c.dst, 0o700); err != nil && err != unix.EEXIST {
		unix.Close(srcFD)
		return -1, -1, fmt.Errorf("create DST %s: %w", c.dst, err)
	}
	dstFD, err = unix.Open(c.dst, openDirFlags, 0)
	if err != nil {
		unix.Close(srcFD)
		return -1, -1, fmt.Errorf("open DST %s: %w", c.dst, err)
	}
	return srcFD, dstFD, nil
}

// workers bounds the parallel work of one pass. Work is handed over with spawn, which
// starts a goroutine when a worker slot is free and otherwise runs the work right away
// in the caller: a walk that recurses can never deadlock waiting for a slot, and no
// more than jobs goroutines (plus the callers) copy at once.
type workers struct {
	g *errgroup.Group
}

func newWorkers(jobs int) *workers {
	g := &errgroup.Group{}
	g.SetLimit(jobs)
	return &workers{g: g}
}

// spawn runs f, in parallel when a slot is free; wg is done when f has returned.
func (w *workers) spawn(wg *stdsync.WaitGroup, f func()) {
	wg.Add(1)
	run := func() error { defer wg.Done(); f(); return nil }
	if !w.g.TryGo(run) {
		_ = run()
	}
}

// firstError keeps the first error of parallel work.
type firstError struct {
	mu  stdsync.Mutex
	err error
}

func (f *firstError) set(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
