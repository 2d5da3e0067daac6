package cutover

// The guardian is a separate process, the livemig binary itself run as a hidden
// subcommand, that resumes the frozen processes if livemig dies before it thaws them: a
// kill -9 at any phase must never leave a process stopped.
//
// livemig tells it of every process before stopping it, over a pipe that is the
// guardian's stdin. The guardian learns of livemig's death from that pipe: when the
// last writer goes away, however it died, the kernel closes the write end and the
// guardian reads EOF. That beats PR_SET_PDEATHSIG, which fires on the exit of the
// parent *thread* (Go retires threads), and a parent pidfd, which would need a second
// channel anyway to tell a normal end from a death.
//
// Protocol, one line per message, each well under PIPE_BUF so that a write is atomic:
//
//	protect PID STARTTIME   a process is about to be stopped
//	release                 normal end: the processes were resumed; exit, touch nothing
//	resume                  resume every protected process now, then exit
//	EOF without release     livemig died: resume every protected process, then exit
//
// The guardian answers "ready" on its stdout once it listens.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// GuardianSubcommand is the argument (argv[1]) with which the binary runs the guardian:
// its main must then call RunGuardian.
const GuardianSubcommand = "guardian"

// GuardianOptions say how to start the guardian. The zero value re-executes the running
// binary (/proc/self/exe, which works even if the file was replaced since) as
// "BINARY guardian".
type GuardianOptions struct {
	Path   string    // default /proc/self/exe
	Args   []string  // default {GuardianSubcommand}
	Stderr io.Writer // where the guardian reports what it did; default os.Stderr
	// StartTimeout bounds the wait for "ready"; default 5 s.
	StartTimeout time.Duration
}

// Guardian is livemig's handle on the running guardian process. It is a Protector.
type Guardian struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	ctl  *os.File // write end of the guardian's stdin
	done chan error
}

// StartGuardian starts the guardian and waits until it listens.
func StartGuardian(opts GuardianOptions) (*Guardian, error) {
	if opts.Path == "" {
		opts.Path = "/proc/self/exe"
	}
	if opts.Args == nil {
		opts.Args = []string{GuardianSubcommand}
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 5 * time.Second
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("guardian: %w", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, fmt.Errorf("guardian: %w", err)
	}
	cmd := exec.Command(opts.Path, opts.Args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = ctlR, readyW, opts.Stderr
	// Its own session: a Ctrl-C or hangup that kills livemig's process group must not
	// kill the one process that would resume the frozen ones. Cwd "/": it must never
	// itself hold a directory under SRC.
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	ctlR.Close()
	readyW.Close()
	if err != nil {
		ctlW.Close()
		readyR.Close()
		return nil, fmt.Errorf("start guardian %s: %w", opts.Path, err)
	}
	g := &Guardian{cmd: cmd, ctl: ctlW, done: make(chan error, 1)}
	go func() { g.done <- cmd.Wait() }()

	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(readyR).ReadString('\n')
		readyR.Close()
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(opts.StartTimeout):
		err = errors.New("no answer")
	}
	if err != nil {
		_ = cmd.Process.Kill()
		ctlW.Close()
		return nil, fmt.Errorf("guardian %s did not start: %w", opts.Path, err)
	}
	return g, nil
}

// PID is the guardian's process id (to exclude it from discovery).
func (g *Guardian) PID() int { return g.cmd.Process.Pid }

// Protect tells the guardian of a process about to be stopped.
func (g *Guardian) Protect(t Target) error {
	return g.send(fmt.Sprintf("protect %d %d\n", t.PID, t.StartTime))
}

// Release ends the guardian without it resuming anything: every process was resumed
// by livemig. It waits for the guardian to exit.
func (g *Guardian) Release() error { return g.finish("release\n") }

// ResumeAll makes the guardian resume every protected process and exit: the fallback
// when livemig's own thaw failed.
func (g *Guardian) ResumeAll() error { return g.finish("resume\n") }

func (g *Guardian) send(msg string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctl == nil {
		return errors.New("guardian already finished")
	}
	if _, err := g.ctl.WriteString(msg); err != nil {
		return fmt.Errorf("guardian pid %d: %w", g.PID(), err)
	}
	return nil
}

func (g *Guardian) finish(msg string) error {
	if err := g.send(msg); err != nil {
		return err
	}
	g.mu.Lock()
	g.ctl.Close()
	g.ctl = nil
	g.mu.Unlock()
	select {
	case err := <-g.done:
		if err != nil {
			return fmt.Errorf("guardian pid %d: %w", g.PID(), err)
		}
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("guardian pid %d did not exit", g.PID())
	}
}

// RunGuardian is the guardian process: it reads the protocol from in (its stdin),
// says "ready" on out, and resumes every protected process unless released. It returns
// once its job is done; an error says which processes it could not resume.
func RunGuardian(in io.Reader, out io.Writer, log io.Writer) error {
	// A hangup or interrupt aimed at livemig's terminal is not for us; a TERM (say a
	// service manager stopping everything) resumes the processes before going.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	type message struct {
		line string
		err  error
	}
	lines := make(chan message)
	go func() {
		r := bufio.NewReader(in)
		for {
			line, err := r.ReadString('\n')
			lines <- message{strings.TrimSuffix(line, "\n"), err}
			if err != nil {
				return
			}
		}
	}()
	if _, err := io.WriteString(out, "ready\n"); err != nil {
		return fmt.Errorf("guardian: %w", err)
	}

	var protected []guarded
	defer func() {
		for _, p := range protected {
			unix.Close(p.pidfd)
		}
	}()
	for {
		select {
		// Resume first, report after: the report may fail (livemig's stderr gone with it).
		case <-term:
			err := resumeGuarded(protected, log)
			fmt.Fprintln(log, "livemig guardian: terminated; resumed the frozen processes")
			return err
		case m := <-lines:
			if m.err != nil {
				err := resumeGuarded(protected, log)
				if m.err != io.EOF {
					fmt.Fprintf(log, "livemig guardian: reading from livemig: %v\n", m.err)
				}
				if len(protected) > 0 {
					fmt.Fprintln(log, "livemig guardian: livemig went away without resuming the processes it froze; resumed them")
				}
				return err
			}
			f := strings.Fields(m.line)
			switch {
			case len(f) == 1 && f[0] == "release":
				return nil
			case len(f) == 1 && f[0] == "resume":
				return resumeGuarded(protected, log)
			case len(f) == 3 && f[0] == "protect":
				pid, err1 := strconv.Atoi(f[1])
				start, err2 := strconv.ParseUint(f[2], 10, 64)
				if err1 != nil || err2 != nil {
					fmt.Fprintf(log, "livemig guardian: bad message %q\n", m.line)
					continue
				}
				if p, ok := openGuarded(Target{PID: pid, StartTime: start}); ok {
					protected = append(protected, p)
				}
			default:
				fmt.Fprintf(log, "livemig guardian: bad message %q\n", m.line)
			}
		}
	}
}

type guarded struct {
	Target
	pidfd int
}

// openGuarded pins the process with a pidfd, so that the SIGCONT, maybe much later,
// cannot reach another process that got the pid meanwhile.
func openGuarded(t Target) (guarded, bool) {
	pidfd, err := unix.PidfdOpen(t.PID, 0)
	if err != nil {
		return guarded{}, false
	}
	st, err := readProcStat("/proc/" + strconv.Itoa(t.PID) + "/stat")
	if err != nil || st.StartTime != t.StartTime {
		unix.Close(pidfd)
		return guarded{}, false
	}
	return guarded{Target: t, pidfd: pidfd}, true
}

func resumeGuarded(procs []guarded, log io.Writer) error {
	var errs []error
	var resumed []string
	for _, p := range procs {
		err := unix.PidfdSendSignal(p.pidfd, unix.SIGCONT, nil, 0)
		switch {
		case err == nil:
			resumed = append(resumed, strconv.Itoa(p.PID))
		case !errors.Is(err, unix.ESRCH):
			errs = append(errs, fmt.Errorf("resume pid %d: %w", p.PID, err))
		}
	}
	if len(resumed) > 0 {
		fmt.Fprintf(log, "livemig guardian: resumed pid(s) %s\n", strings.Join(resumed, " "))
	}
	return errors.Join(errs...)
}
