package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livemig/livemig/internal/testutil"
)

// Storage mounts two filesystems and two views, and Close leaves no mount, no loop
// device and no directory behind, also after a remount stacked a mount on Src.
func TestStorageCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	for _, fs := range []string{"tmpfs", "ext4"} {
		t.Run(fs, func(t *testing.T) {
			if fs == "ext4" {
				testutil.RequireTool(t, "mkfs.ext4")
				testutil.RequireTool(t, "losetup")
			}
			st, err := NewStorage(fs, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			t.Cleanup(func() {
				if !closed {
					st.Close()
				}
			})
			mounts, err := st.ours()
			if err != nil || len(mounts) != 4 {
				t.Fatalf("mounts %v (%v), want src, dst and both views", mounts, err)
			}
			if err := os.WriteFile(filepath.Join(st.Dst, "x"), []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(st.Src, "x"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := st.Remount(); err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]string{st.Src: "new", st.OldView: "old", st.NewView: "new"} {
				if b, err := os.ReadFile(filepath.Join(p, "x")); err != nil || string(b) != want {
					t.Errorf("%s/x = %q (%v), want %q", p, b, err, want)
				}
			}
			loops := append([]string(nil), st.loops...)
			closed = true
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(st.Base); !os.IsNotExist(err) {
				t.Errorf("%s still exists: %v", st.Base, err)
			}
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			if strings.Contains(string(mi), st.Base) || strings.Contains(string(mi), st.tag+" ") {
				t.Errorf("a mount of %s is left", st.Base)
			}
			for _, dev := range loops {
				bf, _ := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/loop/backing_file")
				if strings.Contains(string(bf), st.Base) {
					t.Errorf("%s still attached to %s", dev, bf)
				}
			}
		})
	}
}
