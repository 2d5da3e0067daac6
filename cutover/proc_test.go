package cutover

import (
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// Parsers against text as the kernel prints it, including the awkward cases.

func TestParseProcStat(t *testing.T) {
	// A command may call itself anything, parentheses and spaces included.
	line := "4242 (a) R (b c) T 17 4242 4242 0 -1 4194560 90 0 0 0 1 2 0 0 20 0 3 0 123456 0 0 18446744073709551615\n"
	st, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{Comm: "a) R (b c", State: 'T', PPID: 17, Flags: 4194560, StartTime: 123456}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	if _, err := parseProcStat([]byte("4242 (x")); err == nil {
		t.Error("truncated stat accepted")
	}
}

func TestParseFDInfo(t *testing.T) {
	info, err := parseFDInfo([]byte("pos:\t42\nflags:\t02102002\nmnt_id:\t29\nino:\t7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Pos != 42 || info.Flags != 0o2102002 || info.MountID != 29 {
		t.Errorf("got %+v", info)
	}
	if _, err := parseFDInfo([]byte("mnt_id:\t1\n")); err == nil {
		t.Error("fdinfo without pos and flags accepted")
	}
}

func TestParseMapsLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want mapsEntry
	}{
		{
			"7f1c2a000000-7f1c2a002000 rw-s 00001000 00:2d 17                         /src/with space  ",
			mapsEntry{Start: 0x7f1c2a000000, End: 0x7f1c2a002000, Perms: "rw-s", Offset: 0x1000, DevMajor: 0, DevMinor: 0x2d, Inode: 17, Path: "/src/with space  "},
		},
		{
			"5596e2d8e000-5596e2d91000 r--p 00000000 fe:00 247741                     /src/new\\012line (deleted)",
			mapsEntry{Start: 0x5596e2d8e000, End: 0x5596e2d91000, Perms: "r--p", DevMajor: 0xfe, Inode: 247741, Path: "/src/new\\012line (deleted)"},
		},
		{
			"7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ",
			mapsEntry{Start: 0x7ffd1000, End: 0x7ffd2000, Perms: "rw-p"},
		},
		{
			"7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]",
			mapsEntry{Start: 0x7ffd1000, End: 0x7ffd2000, Perms: "rw-p", Path: "[stack]"},
		},
	} {
		got, err := parseMapsLine(tc.line)
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.line, got, tc.want)
		}
	}
	if _, err := parseMapsLine("garbage"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestParseMountInfo(t *testing.T) {
	text := "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"51 27 0:45 /sub\\040dir /mnt/with\\040space\\012nl rw - tmpfs livemig-test rw\n"
	got, err := parseMountInfo([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []mount{
		{ID: 27, Dev: unix.Mkdev(254, 0), Root: "/", MountPoint: "/", FSType: "ext4"},
		{ID: 51, Dev: unix.Mkdev(0, 45), Root: "/sub dir", MountPoint: "/mnt/with space\nnl", FSType: "tmpfs"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestParseUnixBindings(t *testing.T) {
	text := "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 31337 /src/sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 31338 /src/new\nline sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 31339 @abstract\n" +
		"0000000000000000: 00000003 00000000 00000000 0001 03  1144\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 31340 relative\n" +
		"0000000000000000: 00000003 00000000 00000000 0001 03 31341 /src/sock\n" +
		"0000000000000000: 00000002 00000000 00000000 0002 07 31342 /src/dgram\n"
	want := []unixBinding{
		{31337, "/src/sock", true},
		{31338, "/src/new\nline sock", true},
		{31340, "relative", true},
		{31341, "/src/sock", false}, // accepted from the listener 31337: holds no name
		{31342, "/src/dgram", true},
	}
	if got := parseUnixBindings([]byte(text)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestRelUnder(t *testing.T) {
	for _, tc := range []struct {
		path, dir, rel string
		ok             bool
	}{
		{"/src", "/src", "", true},
		{"/src/a/b", "/src", "a/b", true},
		{"/srcdir/a", "/src", "", false},
		{"/sr", "/src", "", false},
		{"/anything", "/", "anything", true},
		{"/src/a (deleted)", "/src", "a (deleted)", true},
	} {
		rel, ok := relUnder(tc.path, tc.dir)
		if rel != tc.rel || ok != tc.ok {
			t.Errorf("relUnder(%q, %q) = %q, %v; want %q, %v", tc.path, tc.dir, rel, ok, tc.rel, tc.ok)
		}
	}
}

func TestFlagNames(t *testing.T) {
	for flags, want := range map[int]string{
		unix.O_RDONLY:                                 "O_RDONLY",
		unix.O_WRONLY | unix.O_APPEND:                 "O_WRONLY|O_APPEND",
		unix.O_RDWR | unix.O_SYNC | kernelOLargefile:  "O_RDWR|O_SYNC|O_LARGEFILE",
		unix.O_RDONLY | unix.O_DIRECTORY | 0o40000000: "O_RDONLY|O_DIRECTORY|040000000",
	} {
		if got := FlagNames(flags); got != want {
			t.Errorf("FlagNames(%#o) = %s, want %s", flags, got, want)
		}
	}
}
