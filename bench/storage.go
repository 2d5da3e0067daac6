package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Storage is the old and the new storage of one run, each a filesystem of its own
// (tmpfs, or an ext4/xfs image on a loop device), mounted under a private temporary
// directory. Close unmounts everything mounted there and frees the loop devices, and
// touches nothing else.
type Storage struct {
	FS   string // tmpfs, ext4 or xfs
	Base string // the private temporary directory
	Src  string // mount point of the old storage: the tree the workloads use (SRC)
	Dst  string // mount point of the new storage (DST)
	// OldView and NewView are bind mounts of the old and new filesystems' roots, made
	// before the migration: where each file landed can be read there whatever the
	// migration mounted over Src or unmounted from Dst.
	OldView, NewView string

	tag   string   // tmpfs source name, unique to this Storage
	loops []string // loop devices this Storage attached
}

// FSTypes are the filesystems Storage can create.
var FSTypes = []string{"tmpfs", "ext4", "xfs"}

// NewStorage creates both filesystems, each large enough for sizeBytes of pre-filled
// tree plus the workload's logs. On error, whatever was set up is undone.
func NewStorage(fstype string, sizeBytes int64) (s *Storage, err error) {
	base, err := os.MkdirTemp("", "livemig-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	s = &Storage{FS: fstype, Base: base, tag: "livemig-bench-" + filepath.Base(base)}
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, cerr)
			}
			s = nil
		}
	}()
	for _, d := range []string{"src", "dst", "oldview", "newview"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			return s, fmt.Errorf("mkdir %s: %w", filepath.Join(base, d), err)
		}
	}
	s.Src, s.Dst = filepath.Join(base, "src"), filepath.Join(base, "dst")
	s.OldView, s.NewView = filepath.Join(base, "oldview"), filepath.Join(base, "newview")
	// Room for the tree, the logs (a few MiB) and the filesystem's own overhead.
	mib := sizeBytes>>20 + 128
	if fstype == "xfs" && mib < 320 {
		mib = 320 // mkfs.xfs refuses filesystems under 300 MiB
	}
	for i, dir := range []string{s.Src, s.Dst} {
		if err := s.mountNew(fstype, mib, i, dir); err != nil {
			return s, err
		}
	}
	if err := unix.Mount(s.Src, s.OldView, "", unix.MS_BIND, ""); err != nil {
		return s, fmt.Errorf("bind mount %s on %s: %w", s.Src, s.OldView, err)
	}
	if err := unix.Mount(s.Dst, s.NewView, "", unix.MS_BIND, ""); err != nil {
		return s, fmt.Errorf("bind mount %s on %s: %w", s.Dst, s.NewView, err)
	}
	return s, nil
}

func (s *Storage) mountNew(fstype string, mib int64, i int, dir string) error {
	if fstype == "tmpfs" {
		if err := unix.Mount(s.tag, dir, "tmpfs", 0, fmt.Sprintf("size=%dm", mib)); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
		return nil
	}
	mkfs := map[string][]string{"ext4": {"mkfs.ext4", "-q", "-F"}, "xfs": {"mkfs.xfs", "-q", "-f"}}[fstype]
	if mkfs == nil {
		return fmt.Errorf("filesystem %q: want one of %s", fstype, strings.Join(FSTypes, ", "))
	}
	img := filepath.Join(s.Base, fmt.Sprintf("fs%d.img", i))
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create image %s: %w", img, err)
	}
	err = f.Truncate(mib << 20)
	f.Close()
	if err != nil {
		return fmt.Errorf("size image %s: %w", img, err)
	}
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", mkfs[0], img, err, strings.TrimSpace(string(out)))
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		return fmt.Errorf("losetup --find --show %s: %w%s", img, err, stderrOf(err))
	}
	dev := strings.TrimSpace(string(out))
	s.loops = append(s.loops, dev)
	if err := unix.Mount(dev, dir, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, img, dir, err)
	}
	return nil
}

// Device is the source of the filesystem Storage mounted for the old (0) or new (1)
// storage: a loop device, or the tmpfs tag.
func (s *Storage) Device(i int) string {
	if s.FS == "tmpfs" {
		return s.tag
	}
	return s.loops[i]
}

// Remount puts the new filesystem on Src's path, the way seed 001 does it: unmount it
// from Dst and mount it again on Src, over the old one (which stays mounted beneath,
// since processes still use it). A tmpfs cannot be unmounted without losing its content,
// so it is bind-mounted on Src first and then unmounted from Dst.
func (s *Storage) Remount() error {
	if s.FS == "tmpfs" {
		if err := unix.Mount(s.Dst, s.Src, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", s.Dst, s.Src, err)
		}
		if err := unix.Unmount(s.Dst, 0); err != nil {
			return fmt.Errorf("umount %s: %w", s.Dst, err)
		}
		return nil
	}
	if err := unix.Unmount(s.Dst, 0); err != nil {
		return fmt.Errorf("umount %s: %w", s.Dst, err)
	}
	if err := unix.Mount(s.loops[1], s.Src, s.FS, 0, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", s.loops[1], s.Src, err)
	}
	return nil
}

// Close unmounts every mount under Base and every mount of this Storage's filesystems
// (a migration may have moved one), then detaches the loop devices and removes Base.
// Base is removed only when nothing is mounted under it any more.
func (s *Storage) Close() error {
	var errs []error
	for pass := 0; pass < 8; pass++ {
		mounts, err := s.ours()
		if err != nil {
			errs = append(errs, err)
			break
		}
		if len(mounts) == 0 {
			break
		}
		for i := len(mounts) - 1; i >= 0; i-- { // the newest first
			unmountRetry(mounts[i])
		}
	}
	left, _ := s.ours()
	for _, m := range left {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("umount -l %s: %w", m, err))
		}
	}
	for _, dev := range s.loops {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("losetup -d %s: %w: %s", dev, err, strings.TrimSpace(string(out))))
		}
	}
	if left, err := s.ours(); err == nil && len(left) == 0 {
		if err := os.RemoveAll(s.Base); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", s.Base, err))
		}
	} else {
		errs = append(errs, fmt.Errorf("%s kept: still mounted: %v", s.Base, left))
	}
	return errors.Join(errs...)
}

func unmountRetry(dir string) {
	for i := 0; i < 50; i++ {
		err := unix.Unmount(dir, 0)
		if err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ours lists, in mount order, the mount points that are under Base or whose source is
// one of this Storage's filesystems.
func (s *Storage) ours() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	srcs := map[string]bool{s.tag: true}
	for _, l := range s.loops {
		srcs[l] = true
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mp, src, ok := parseMountinfo(sc.Text())
		if !ok {
			continue
		}
		if mp == s.Base || strings.HasPrefix(mp, s.Base+"/") || srcs[src] {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// parseMountinfo returns the mount point and the source of one /proc/PID/mountinfo line.
func parseMountinfo(line string) (mountPoint, source string, ok bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return "", "", false
	}
	for i := 6; i+2 < len(f); i++ {
		if f[i] == "-" {
			return unescapeMount(f[4]), unescapeMount(f[i+2]), true
		}
	}
	return "", "", false
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo fields.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}
