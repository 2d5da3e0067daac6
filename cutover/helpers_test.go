package cutover

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livemig/livemig/internal/testutil"
)

// TestMain lets the test binary play the parts the tests need it to: the guardian (as
// the livemig binary does with its hidden subcommand) and a killable livemig stand-in.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == GuardianSubcommand {
		if err := RunGuardian(os.Stdin, os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	if role := os.Getenv(helperRoleEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

// child is a started test program and what it reported before "ready".
type child struct {
	cmd    *exec.Cmd
	report map[string]string
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) int(t *testing.T, key string) int {
	t.Helper()
	v, ok := c.report[key]
	if !ok {
		t.Fatalf("child did not report %q (report %v)", key, c.report)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("child reported %s=%q: %v", key, v, err)
	}
	return n
}

func (c *child) hex(t *testing.T, key string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(c.report[key], 16, 64)
	if err != nil {
		t.Fatalf("child reported %s=%q: %v", key, c.report[key], err)
	}
	return n
}

// startChild runs bin with args, waits for its "ready" line and collects its report.
// It is killed, never left stopped, when the test ends.
func startChild(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, cmd)
	testutil.ContinueAtCleanup(t, cmd.Process.Pid)
	c := &child{cmd: cmd, report: map[string]string{}}
	for _, line := range testutil.ReadLines(t, bufio.NewReader(out), "ready", 10*time.Second) {
		k, v, _ := strings.Cut(line, " ")
		c.report[k] = v
	}
	return c
}

func discoverT(t *testing.T, src string, opts Options) *Discovery {
	t.Helper()
	d, err := Discover(src, opts)
	if err != nil {
		t.Fatalf("Discover(%s): %v", src, err)
	}
	return d
}

func processOf(t *testing.T, d *Discovery, pid int) *Process {
	t.Helper()
	for i := range d.Processes {
		if d.Processes[i].PID == pid {
			return &d.Processes[i]
		}
	}
	t.Fatalf("pid %d not discovered; found %v", pid, d.Targets())
	return nil
}

func fdOf(t *testing.T, p *Process, num int) *FD {
	t.Helper()
	for i := range p.FDs {
		if p.FDs[i].Num == num {
			return &p.FDs[i]
		}
	}
	t.Fatalf("pid %d: fd %d not discovered; fds %+v", p.PID, num, p.FDs)
	return nil
}

func mapAt(t *testing.T, p *Process, start uint64) *Mapping {
	t.Helper()
	for i := range p.Maps {
		if p.Maps[i].Start == start {
			return &p.Maps[i]
		}
	}
	t.Fatalf("pid %d: mapping at %x not discovered; maps %+v", p.PID, start, p.Maps)
	return nil
}

func leftoverFor(p *Process, what string) *Leftover {
	for i := range p.Leftovers {
		if p.Leftovers[i].What == what {
			return &p.Leftovers[i]
		}
	}
	return nil
}
