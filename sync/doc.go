// Package sync owns the mirror: it keeps DST an exact, continuously updated copy of SRC
// (parallel first pass, inotify follow, block delta, lag and convergence).
//
// It knows nothing about processes. Inside this package the standard library's sync is
// imported as stdsync; callers import this one as livesync.
package sync
