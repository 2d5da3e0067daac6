package sync

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
)

// Stats are a mirror's totals since it started.
type Stats struct {
	Entries      int64         `json:"entries"`          // entries looked at
	FilesCopied  int64         `json:"files_copied"`     // regular files whose content was written
	BytesWritten int64         `json:"bytes_written"`    // file data written at DST
	BytesRead    int64         `json:"bytes_read"`       // file data read (SRC, and DST when comparing)
	MetaOnly     int64         `json:"meta_only"`        // entries whose metadata alone was fixed
	Created      int64         `json:"created"`          // directories, symlinks, special files made
	Deleted      int64         `json:"deleted"`          // entries removed at DST
	Renamed      int64         `json:"renamed"`          // renames replayed at DST
	Linked       int64         `json:"linked"`           // hardlinks made at DST
	Passes       int64         `json:"passes"`           // full walks: the first and each rescan
	Overflows    int64         `json:"overflows"`        // inotify queue overflows (each causes a rescan)
	Problems     int64         `json:"problems"`         // per-path problems (see Errors)
	Errors       []PathError   `json:"errors,omitempty"` // the latest per-path problems
	Elapsed      time.Duration `json:"elapsed_ns"`
}

func (t *tree) snapshot(start time.Time) Stats {
	c := t.stats
	s := Stats{
		Entries: c.entries.Load(), FilesCopied: c.files.Load(), BytesWritten: c.bytesWritten.Load(),
		BytesRead: c.bytesRead.Load(), MetaOnly: c.metaOnly.Load(), Created: c.created.Load(),
		Deleted: c.deleted.Load(), Renamed: c.renamed.Load(), Linked: c.linked.Load(),
		Passes: c.passes.Load(), Overflows: c.overflows.Load(), Problems: c.problems.Load(),
		Elapsed: time.Since(start),
	}
	t.problemsMu.Lock()
	s.Errors = append([]PathError(nil), t.problems...)
	t.problemsMu.Unlock()
	return s
}

// Once makes DST a copy of SRC in one pass and returns; it does not follow changes.
// Per-path problems are in Stats.Errors (the error is nil for them); a full DST, a
// cancelled ctx or bad options return an error.
func Once(ctx context.Context, opts Options) (Stats, error) {
	start := time.Now()
	cfg, err := opts.resolve(false)
	if err != nil {
		return Stats{}, err
	}
	srcFD, dstFD, err := cfg.openRoots()
	if err != nil {
		return Stats{}, err
	}
	defer unix.Close(srcFD)
	defer unix.Close(dstFD)
	t := newTree(cfg, srcFD, dstFD)
	err = t.newPass(ctx, false, false).run()
	s := t.snapshot(start)
	t.logSummary("pass done", s)
	return s, err
}
