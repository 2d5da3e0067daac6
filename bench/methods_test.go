package bench

import (
	"strings"
	"testing"
)

// The generated gdb session follows seed 000 step by step, for every fd, in fd order.
func TestGDBScriptFollowsSeed000(t *testing.T) {
	fds := map[int]string{4: "/old/w00/f001.log", 3: "/old/w00/f000.log"}
	s := gdbScript(fds, "/old/w00", "/old", "/new")
	want := []string{
		"call (int) fsync(3)",
		"call (int) fsync(4)",
		"shell sync",
		"shell mkdir -p '/new/w00' && cp -p",
		`call (int) chdir("/new/w00")`,
		"set var $oldfd = 3",
		"call (int) fcntl($oldfd, 3)",
		`call (int) open("/new/w00/f000.log", $)`,
		"set var $newfd = $",
		"call (long) lseek($oldfd, 0, 1)",
		"call (long) lseek($newfd, $, 0)",
		"call (int) dup2($newfd, $oldfd)",
		"call (int) close($newfd)",
		"set var $oldfd = 4",
		`call (int) open("/new/w00/f001.log", $)`,
		"detach",
		"quit",
	}
	rest := s
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("gdb script lacks %q after the previous steps:\n%s", w, s)
		}
		rest = rest[i+len(w):]
	}
	// cwd outside the tree: no chdir.
	if s := gdbScript(nil, "/elsewhere", "/old", "/new"); strings.Contains(s, "chdir") {
		t.Errorf("chdir for a cwd outside SRC:\n%s", s)
	}
}

func TestCString(t *testing.T) {
	if got := cString("a\"b\\c\nd"); got != `"a\"b\\c\012d"` {
		t.Errorf("cString = %s", got)
	}
}

func TestParseMountinfo(t *testing.T) {
	line := `36 35 98:0 / /tmp/livemig-bench-1/with\040space rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue`
	mp, src, ok := parseMountinfo(line)
	if !ok || mp != "/tmp/livemig-bench-1/with space" || src != "/dev/loop3" {
		t.Errorf("parseMountinfo = %q %q %v", mp, src, ok)
	}
	if _, _, ok := parseMountinfo("garbage"); ok {
		t.Error("garbage parsed")
	}
}
