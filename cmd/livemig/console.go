package main

import (
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// console owns stderr. Log records go through it, and on a terminal it keeps a live
// status line below them: a record clears the line, is written, and the line is drawn
// again, so that logs and the display never garble each other. When stderr is not a
// terminal there is no status line at all, only the records (plain slog text).
type console struct {
	mu   sync.Mutex
	out  *os.File
	tty  bool
	line string // the status line on screen now ("" when none)
}

func newConsole(f *os.File) *console { return &console{out: f, tty: isTerminal(f)} }

// isTerminal reports whether f is a terminal: only a terminal answers TCGETS.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// logger logs through the console.
func (c *console) logger() *slog.Logger { return slog.New(slog.NewTextHandler(c, nil)) }

// Write is for log records.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.line != "" {
		_, _ = io.WriteString(c.out, "\r\033[K")
	}
	n, err := c.out.Write(p)
	if c.line != "" {
		_, _ = io.WriteString(c.out, c.line)
	}
	return n, err
}

// show replaces the status line (terminals only), cut to the terminal's width so that it
// never wraps: a wrapped line could not be erased by "\r".
func (c *console) show(line string) {
	if !c.tty {
		return
	}
	if ws, err := unix.IoctlGetWinsize(int(c.out.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 1 {
		if r := []rune(line); len(r) > int(ws.Col)-1 {
			line = string(r[:int(ws.Col)-1])
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.out, "\r\033[K"+line)
	c.line = line
}

// clear removes the status line, before the final report or an exit.
func (c *console) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.line != "" {
		_, _ = io.WriteString(c.out, "\r\033[K")
		c.line = ""
	}
}
