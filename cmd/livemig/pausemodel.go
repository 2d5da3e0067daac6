package main

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
	livesync "github.com/livemig/livemig/sync"
)

// The pause model: how long a cutover will hold the processes, predicted before it runs.
//
//	pause = pauseBase
//	      + pausePerProcess * processes + pausePerThread * (threads - processes)
//	      + pausePerItem * (fds + mappings + cwd/root entries under SRC)
//	      + final delta
//	final delta = the mirror's estimate for what is dirty (paths * cost per path +
//	              bytes / copy rate)
//	            + (bytes of files open for writing or mapped shared, and of deleted but
//	              open files) / copy rate: those are read whole inside the pause.
//
// The constants are fitted to `make bench-downtime` on the idle 2-core development
// machine (2026-11-21 12:20 UTC; README, "Results"): the worst pause a writer saw was
// 2.5 ms for 1 process with 1 fd and its cwd, 12.3 ms for 1 process with 64 fds, 49.5 ms
// for 20 processes with 8 fds each; the model gives 3.0, 12.5 and 52.5 ms. The thread
// cost is twice what attach+detach adds per thread (`make bench-inject`: 1.74 ms for 64
// threads, 0.26 ms for 1). They are deliberately on the high side: a prediction is a
// promise to an operator, and an early finish is no harm. Processes are frozen, swapped
// and verified up to eight at a time, which the per-process cost averages in.
const (
	pauseBase       = 1500 * time.Microsecond // rescan after the freeze, flush barrier, remount, commit
	pausePerProcess = 1200 * time.Microsecond // stop, attach, inject setup, verify, resume
	pausePerThread  = 50 * time.Microsecond
	pausePerItem    = 150 * time.Microsecond // its share of a batch of swaps, its spare, its check
	// defaultCopyRate is used when no running mirror has measured one (bytes/s): a page
	// cache read on this class of machine, halved.
	defaultCopyRate = 500e6
)

// pausePrediction is the model applied to a discovery and a dirty state.
type pausePrediction struct {
	Processes   int    `json:"processes"`
	Threads     int    `json:"threads"`
	Items       int    `json:"items"` // fds, mappings, cwd and root entries to move
	ForcedPaths int    `json:"forced_paths"`
	ForcedBytes int64  `json:"forced_bytes"` // re-read whole inside the pause
	DirtyPaths  int    `json:"dirty_paths"`
	DirtyBytes  int64  `json:"dirty_bytes"`
	DirtyFrom   string `json:"dirty_from"` // where the dirty state comes from
	OverheadNs  int64  `json:"overhead_ns"`
	DeltaNs     int64  `json:"final_delta_ns"`
	PauseNs     int64  `json:"pause_ns"`
}

// predictPause applies the model. lag is the running mirror's (nil: none is known, and
// the dirty part counts as nothing: a freshly converged mirror).
func predictPause(d *cutover.Discovery, lag *livesync.Lag, dirtyFrom string) pausePrediction {
	p := pausePrediction{DirtyFrom: dirtyFrom}
	forced := map[string]bool{}
	addForced := func(n cutover.Node) {
		key := n.Rel
		if n.Deleted {
			key = n.Path + "\x00deleted"
		}
		if forced[key] {
			return
		}
		forced[key] = true
		p.ForcedPaths++
		p.ForcedBytes += n.Size
	}
	for _, proc := range d.Processes {
		p.Processes++
		p.Threads += max(1, len(proc.Threads))
		p.Items += len(proc.FDs) + len(proc.Maps) + len(proc.Cwd) + len(proc.Root)
		for _, fd := range proc.FDs {
			if fd.Kind == cutover.KindFile && (fd.Deleted || fd.Flags&unix.O_ACCMODE != unix.O_RDONLY) {
				addForced(fd.Node)
			}
		}
		for _, m := range proc.Maps {
			if m.Kind == cutover.KindSharedMap && m.Prot&unix.PROT_WRITE != 0 {
				addForced(m.Node)
			}
		}
	}
	p.OverheadNs = int64(pauseOverhead(p.Processes, p.Threads, p.Items))
	rate := defaultCopyRate
	var delta time.Duration
	if lag != nil {
		p.DirtyPaths, p.DirtyBytes = lag.DirtyPaths, lag.DirtyBytes
		delta = lag.Estimate
		if lag.Rate > 0 {
			rate = lag.Rate
		}
	}
	delta += time.Duration(float64(p.ForcedBytes) / rate * float64(time.Second))
	p.DeltaNs = int64(delta)
	p.PauseNs = p.OverheadNs + p.DeltaNs
	return p
}

// pauseOverhead is the pause apart from the final delta.
func pauseOverhead(processes, threads, items int) time.Duration {
	if processes == 0 {
		return 0
	}
	return pauseBase + time.Duration(processes)*pausePerProcess +
		time.Duration(max(0, threads-processes))*pausePerThread + time.Duration(items)*pausePerItem
}
