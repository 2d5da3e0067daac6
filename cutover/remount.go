package cutover

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// remount is the --remount step: the old filesystem is moved from SRC to an aside
// directory (kept mounted, so that the step can be undone and the old files stay
// reachable by path), and DST's filesystem is moved onto SRC.
type remount struct {
	src, dst string
	aside    string
}

func putAside(src, dst string) (*remount, error) {
	aside, err := os.MkdirTemp("", "livemig-old-")
	if err != nil {
		return nil, err
	}
	r := &remount{src: src, dst: dst, aside: aside}
	if err := unix.Mount(src, aside, "", unix.MS_MOVE, ""); err != nil {
		os.Remove(aside)
		return nil, fmt.Errorf("move old filesystem %s to %s: %w", src, aside, err)
	}
	if err := unix.Mount(dst, src, "", unix.MS_MOVE, ""); err != nil {
		if uerr := unix.Mount(aside, src, "", unix.MS_MOVE, ""); uerr != nil {
			return nil, fmt.Errorf("move new filesystem %s to %s: %w; and moving the old one back from %s failed: %v", dst, src, err, aside, uerr)
		}
		os.Remove(aside)
		return nil, fmt.Errorf("move new filesystem %s to %s: %w", dst, src, err)
	}
	return r, nil
}

// undo puts both filesystems back where they were.
func (r *remount) undo() error {
	err := unix.Mount(r.src, r.dst, "", unix.MS_MOVE, "")
	if err != nil {
		return fmt.Errorf("move new filesystem back from %s to %s: %w", r.src, r.dst, err)
	}
	if err := unix.Mount(r.aside, r.src, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move old filesystem back from %s to %s: %w", r.aside, r.src, err)
	}
	os.Remove(r.aside)
	return nil
}

// finish unmounts the old filesystem. If something still holds it (a leftover), it stays
// mounted aside, and the error says where.
func (r *remount) finish() error {
	if err := unix.Unmount(r.aside, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("old filesystem still in use (see the leftovers): kept mounted at %s", r.aside)
		}
		return fmt.Errorf("unmount old filesystem at %s: %w", r.aside, err)
	}
	os.Remove(r.aside)
	return nil
}
