package bench

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

//go:embed c/workload.c
var workloadSource string

// BuildWorkload compiles the workload program with gcc into dir and returns its path.
func BuildWorkload(dir string) (string, error) {
	if _, err := exec.LookPath("gcc"); err != nil {
		return "", fmt.Errorf("the workload is built with gcc at run time: %w", err)
	}
	src := filepath.Join(dir, "workload.c")
	bin := filepath.Join(dir, "workload")
	if err := os.WriteFile(src, []byte(workloadSource), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", src, err)
	}
	out, err := exec.Command("gcc", "-O2", "-Wall", "-pthread", "-o", bin, src).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gcc %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// Shape is the workload of one run.
type Shape struct {
	Procs     int   `json:"procs"`      // writer processes
	Files     int   `json:"files"`      // files per process
	Threads   int   `json:"threads"`    // threads per process (files shared out among them)
	Rate      int   `json:"rate"`       // lines per second per file
	Size      int64 `json:"size"`       // bytes of pre-filled tree beside the logs
	DirtyRate int64 `json:"dirty_rate"` // bytes per second rewritten in the pre-filled tree
}

func (sh Shape) String() string { return fmt.Sprintf("%dx%d", sh.Procs, sh.Files) }

// fillFile is the size of one file of the pre-filled tree.
const fillFile = 256 << 10

// Fill creates the pre-filled part of the tree, dir/fill/fill000..., sh.Size bytes in all.
func Fill(dir string, size int64) error {
	fill := filepath.Join(dir, "fill")
	if err := os.Mkdir(fill, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", fill, err)
	}
	r := rand.NewChaCha8([32]byte{'l', 'i', 'v', 'e', 'm', 'i', 'g'})
	buf := make([]byte, fillFile)
	for i := 0; size > 0 || i == 0; i++ {
		n := min(size, fillFile)
		_, _ = r.Read(buf[:n])
		p := filepath.Join(fill, fmt.Sprintf("fill%03d", i))
		if err := os.WriteFile(p, buf[:n], 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		size -= n
	}
	return nil
}

// fillCount is how many fill files Fill made for size.
func fillCount(size int64) int { return max(1, int((size+fillFile-1)/fillFile)) }

// Workload is the set of running workload processes of one run.
type Workload struct {
	Writers []*Writer
	dirty   *exec.Cmd
	stopped bool
}

// Writer is one writer process: its directory relative to the tree and its files.
type Writer struct {
	Cmd   *exec.Cmd
	PID   int
	Dir   string   // relative to the tree root, e.g. "w00"
	Files []string // relative to the tree root, e.g. "w00/f000.log"
	errb  *bytes.Buffer
}

// StartWorkload starts sh.Procs writers under root (each in root/wNN, its cwd) and,
// with a dirty rate, the background writer in root/fill. It returns once every process
// has reported ready. On error every process started is stopped again.
func StartWorkload(ctx context.Context, bin, root string, sh Shape) (w *Workload, err error) {
	w = &Workload{}
	defer func() {
		if err != nil {
			w.Stop()
			w = nil
		}
	}()
	for p := 0; p < sh.Procs; p++ {
		rel := fmt.Sprintf("w%02d", p)
		dir := filepath.Join(root, rel)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return w, fmt.Errorf("mkdir %s: %w", dir, err)
		}
		args := []string{"write", "--files", strconv.Itoa(sh.Files), "--threads", strconv.Itoa(max(1, sh.Threads)), "--rate", strconv.Itoa(sh.Rate)}
		cmd, errb, err := startReady(ctx, bin, dir, args)
		if err != nil {
			return w, err
		}
		wr := &Writer{Cmd: cmd, PID: cmd.Process.Pid, Dir: rel, errb: errb}
		for i := 0; i < sh.Files; i++ {
			wr.Files = append(wr.Files, fmt.Sprintf("%s/f%03d.log", rel, i))
		}
		w.Writers = append(w.Writers, wr)
	}
	if sh.DirtyRate > 0 {
		args := []string{"dirty", "--files", strconv.Itoa(fillCount(sh.Size)), "--rate", strconv.FormatInt(sh.DirtyRate, 10)}
		cmd, _, err := startReady(ctx, bin, filepath.Join(root, "fill"), args)
		if err != nil {
			return w, err
		}
		w.dirty = cmd
	}
	return w, nil
}

// startReady starts the workload in dir and waits for its "ready" line.
func startReady(ctx context.Context, bin, dir string, args []string) (*exec.Cmd, *bytes.Buffer, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var errb bytes.Buffer
	cmd.Stderr = &errb
	// Its own process group: a Ctrl-C at the terminal reaches bench only, which then
	// stops the workload in order. Pdeathsig: a bench killed outright takes it along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("workload in %s: %w", dir, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start workload in %s: %w", dir, err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("said %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = errors.New("not ready after 10 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, nil, fmt.Errorf("workload pid %d in %s: %w: %s", cmd.Process.Pid, dir, err, strings.TrimSpace(errb.String()))
	}
	return cmd, &errb, nil
}

// PIDs of every process of the workload, the background writer included.
func (w *Workload) PIDs() []int {
	var pids []int
	for _, wr := range w.Writers {
		pids = append(pids, wr.PID)
	}
	if w.dirty != nil {
		pids = append(pids, w.dirty.Process.Pid)
	}
	return pids
}

// Exited returns an error naming the first writer that is no longer running, with what
// it said on stderr: a writer that died mid-run invalidates the run.
func (w *Workload) Exited() error {
	for _, wr := range w.Writers {
		if err := syscall.Kill(wr.PID, 0); err != nil || wr.Cmd.ProcessState != nil {
			return fmt.Errorf("writer pid %d exited: %s", wr.PID, strings.TrimSpace(wr.errb.String()))
		}
		if st, err := os.ReadFile("/proc/" + strconv.Itoa(wr.PID) + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
				return fmt.Errorf("writer pid %d exited: %s", wr.PID, strings.TrimSpace(wr.errb.String()))
			}
		}
	}
	return nil
}

// Stop kills every process of the workload (resuming it first, in case a recipe left
// it stopped) and reaps it. Only processes this Workload started are signalled.
func (w *Workload) Stop() {
	if w.stopped {
		return
	}
	w.stopped = true
	cmds := []*exec.Cmd{}
	for _, wr := range w.Writers {
		cmds = append(cmds, wr.Cmd)
	}
	if w.dirty != nil {
		cmds = append(cmds, w.dirty)
	}
	for _, c := range cmds {
		_ = c.Process.Signal(syscall.SIGCONT)
		_ = c.Process.Kill()
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
}
