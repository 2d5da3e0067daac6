package sync

import (
	"encoding/json"
	"errors"
	"fmt"
)

// InputError is bad input: a source that does not exist, a destination inside the
// source, and so on. The command line turns it into exit status 2.
type InputError struct {
	Path   string // the path the user gave
	Reason string
}

func (e *InputError) Error() string { return fmt.Sprintf("%s: %s", e.Path, e.Reason) }

// ErrNoSpace is wrapped by the error that stops the mirror when DST is full (ENOSPC or
// EDQUOT). SRC is never touched, so the mirror can simply be started again with room.
var ErrNoSpace = errors.New("destination is full")

// PathError is a problem with one path that does not stop the mirror (a permission
// denied, an xattr the destination filesystem does not support). Such paths are
// reported, retried on the next change, and make the command exit with leftovers.
type PathError struct {
	Path string // relative to SRC
	Op   string
	Err  error
}

func (e *PathError) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err) }
func (e *PathError) Unwrap() error { return e.Err }

// MarshalJSON writes the error as text, which encoding/json cannot do for an error.
func (e PathError) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Path  string `json:"path"`
		Op    string `json:"op"`
		Error string `json:"error"`
	}{e.Path, e.Op, fmt.Sprint(e.Err)})
}

// WatchLimitError is returned by Follow when the kernel refuses one more inotify watch:
// every directory of SRC needs one, and fs.inotify.max_user_watches caps them per user.
type WatchLimitError struct {
	Limit  int // fs.inotify.max_user_watches now
	Needed int // directories under SRC, each needing a watch
	Err    error
}

func (e *WatchLimitError) Error() string {
	return fmt.Sprintf("out of inotify watches: SRC has %d directories and each needs one, "+
		"but fs.inotify.max_user_watches is %d (shared by every program of this user); "+
		"raise it, e.g. sysctl -w fs.inotify.max_user_watches=%d: %v",
		e.Needed, e.Limit, suggestWatches(e.Limit, e.Needed), e.Err)
}

func (e *WatchLimitError) Unwrap() error { return e.Err }

func suggestWatches(limit, needed int) int {
	s := limit + needed + needed/4 + 1024
	if s < 2*limit {
		s = 2 * limit
	}
	return s
}
