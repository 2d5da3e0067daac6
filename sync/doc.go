// Package sync owns the mirror: it keeps DST an exact, continuously updated copy of SRC
// (parallel first pass, inotify follow, block delta, lag and convergence).
//
// It knows nothing about processes. Inside this package the standard library's sync is
// imported as stdsync; callers import this one as livesync.
//
// Three entry points:
//
//   - Once copies SRC to DST in one pass (what a cutover uses when no mirror runs).
//   - Mirror follows SRC: New, then Follow (first pass, then inotify events until the
//     context ends); Lag and Converged say how far behind DST is; Flush is a cutover's
//     final delta: it returns when DST matches SRC for the paths given (compared by
//     content) and for every change noticed so far.
//   - Verify compares two trees completely and lists every difference.
//
// What is kept: content (holes stay holes), mode with setuid/setgid/sticky, owner and
// group, nanosecond mtime (and atime), every xattr (ACLs included), symlinks,
// hardlinks, fifos, sockets and device nodes, empty directories; directory times are
// set after their content. New files appear at DST complete (an O_TMPFILE linked in,
// or a temporary name renamed over), mode 0600 until then. SRC is only read, with
// O_NOATIME, and never through a symlink: every lookup goes from a directory
// descriptor (openat2 with RESOLVE_NO_SYMLINKS below the roots).
//
// Following: every directory is watched (fsnotify) before it is listed. Events only
// mark paths dirty; batches of dirty paths are applied in an order that lets a rename
// in SRC be replayed as a rename at DST (found by inode: fsnotify gives no cookie) and
// keeps parallel copies apart from changes of the tree's shape. A changed large file is
// patched block by block against the hashes of what was last written, so DST is not
// read back and an append writes only its tail. A queue overflow triggers a full
// rescan; a full DST stops the mirror (ErrNoSpace); a path that cannot be read is
// reported (PathError) and the mirror goes on.
package sync
