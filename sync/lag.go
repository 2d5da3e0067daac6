package sync

import (
	"time"

	"golang.org/x/sys/unix"
)

// Lag is how far DST is behind SRC right now.
type Lag struct {
	DirtyPaths int           `json:"dirty_paths"` // changed paths not yet at DST (being copied included)
	DirtyBytes int64         `json:"dirty_bytes"` // SRC size of the changed regular files among them
	Oldest     time.Duration `json:"oldest_ns"`   // age of the oldest change not yet at DST
	Rate       float64       `json:"rate_bps"`    // bytes per second the mirror recently read and copied
	Estimate   time.Duration `json:"estimate_ns"` // how long copying what is dirty would take now
	Rescanning bool          `json:"rescanning"`  // a full pass (first, or after an overflow) is due or running
}

// rateMeter learns how fast batches go: a cost per path, and bytes per second. Both
// are moving averages, so the estimate follows the machine's current load.
type rateMeter struct {
	perPath     time.Duration
	bytesPerSec float64
}

const (
	defaultPerPath = 50 * time.Microsecond
	defaultRate    = 500e6 // bytes/s until measured
	ewmaWeight     = 0.3
)

func (r *rateMeter) observe(paths int, bytes int64, took time.Duration) {
	if r.perPath == 0 {
		r.perPath, r.bytesPerSec = defaultPerPath, defaultRate
	}
	// Batches dominated by data teach the rate; batches of small changes teach the cost
	// per path. A batch of both teaches neither (its split is unknown).
	switch {
	case bytes >= 8<<20 && took > 0:
		rate := float64(bytes) / took.Seconds()
		r.bytesPerSec = (1-ewmaWeight)*r.bytesPerSec + ewmaWeight*rate
	case bytes < 1<<20 && paths > 0:
		per := took / time.Duration(paths)
		r.perPath = time.Duration((1-ewmaWeight)*float64(r.perPath) + ewmaWeight*float64(per))
	}
}

func (r *rateMeter) estimate(paths int, bytes int64) time.Duration {
	per, rate := r.perPath, r.bytesPerSec
	if per == 0 {
		per, rate = defaultPerPath, defaultRate
	}
	return time.Duration(paths)*per + time.Duration(float64(bytes)/rate*float64(time.Second))
}

// lagSample bounds the stat calls one Lag call makes; beyond it the bytes are
// extrapolated from the sample.
const lagSample = 4096

// Lag reports how far behind DST is: paths changed and not yet copied, their bytes,
// the age of the oldest such change, and the time copying them would take now.
func (m *Mirror) Lag() Lag {
	m.mu.Lock()
	paths := make([]string, 0, len(m.dirty)+len(m.inflight))
	oldest := m.inflightAt
	for rel, at := range m.dirty {
		paths = append(paths, rel)
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	paths = append(paths, m.inflight...)
	rescan := m.rescanDue || !m.initialDone
	rate := m.rate
	m.mu.Unlock()

	l := Lag{DirtyPaths: len(paths), Rescanning: rescan}
	if !oldest.IsZero() {
		l.Oldest = time.Since(oldest)
	}
	sampled := 0
	for _, rel := range paths {
		if sampled == lagSample {
			l.DirtyBytes = l.DirtyBytes * int64(len(paths)) / int64(sampled)
			break
		}
		sampled++
		var st unix.Stat_t
		if unix.Lstat(m.abs(rel), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			l.DirtyBytes += st.Size
		}
	}
	l.Rate = rate.bytesPerSec
	if l.Rate == 0 {
		l.Rate = defaultRate
	}
	l.Estimate = rate.estimate(l.DirtyPaths, l.DirtyBytes)
	return l
}

// Converged reports whether the mirror has done its first pass, has no rescan pending,
// has not stopped on an error, and could copy everything dirty within budget: the
// moment a cutover's pause would be short enough.
func (m *Mirror) Converged(budget time.Duration) bool {
	m.mu.Lock()
	failed := m.fatal != nil
	m.mu.Unlock()
	if failed {
		return false
	}
	l := m.Lag()
	return !l.Rescanning && l.Estimate <= budget
}
