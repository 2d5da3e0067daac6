// Command livemig moves a live directory tree to new storage while the programs that use
// it keep running. See README.md and the subcommands' --help.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/spf13/pflag"
)

// Exit statuses of the command-line contract (shared/DESIGN.md).
const (
	exitOK        = 0 // done
	exitFailed    = 1 // failed and rolled back: nothing changed
	exitUsage     = 2 // bad usage or input
	exitLeftovers = 3 // done, with things that could not be moved
)

// command is one subcommand. Each lives in its own file and registers itself in init,
// so that adding a command touches no other command's file.
type command struct {
	name    string
	summary string
	hidden  bool   // internal: not listed in the top-level help
	usage   string // argument synopsis and examples, shown by --help
	// run parses args with fs (already holding the shared flags) and does the work.
	setup func(fs *pflag.FlagSet) func(args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// usageError is bad usage or input: exit 2 with one clear line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitError carries a specific exit status (1 or 3) with its message.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printTopUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "livemig: unknown command %q (see livemig --help)\n", args[0])
		return exitUsage
	}
	// A command of two words ("bench sync") has flags of its own.
	if len(args) > 1 {
		if sc, ok := commands[args[0]+" "+args[1]]; ok {
			c, args = sc, args[1:]
		}
	}
	fs := pflag.NewFlagSet("livemig "+c.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "livemig %s — %s\n\nUsage: livemig %s\n\nFlags:\n%s", c.name, c.summary, c.usage, fs.FlagUsages())
	}
	do := c.setup(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "livemig %s: %v\n", c.name, err)
		return exitUsage
	}
	err := do(fs.Args())
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "livemig %s: %v\n", c.name, err)
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	default:
		return exitFailed
	}
}

func printTopUsage(w io.Writer) {
	fmt.Fprintln(w, "livemig moves a live directory tree to new storage while its programs keep running.")
	fmt.Fprintln(w, "\nUsage: livemig COMMAND [flags] ARGS...\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	width := 9
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s %s\n", width, n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'livemig COMMAND --help' for a command's flags and examples.")
	fmt.Fprintln(w, "Exit status: 0 done; 1 failed and rolled back; 2 bad usage or input; 3 done with leftovers.")
}
