package cutover

// Readers of the /proc files discovery and freezing rely on. Each parser keeps to what the
// kernel really prints: comm may hold spaces and ')', mountinfo escapes its paths in
// octal, maps escapes only '\n' (so its paths are ambiguous and are taken from map_files
// instead), and fd links carry a " (deleted)" marker that a real name can also end with.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pfKthread is PF_KTHREAD from include/linux/sched.h, the flags field of /proc/PID/stat.
const pfKthread = 0x00200000

// procStat is what livemig needs of /proc/PID/stat or /proc/PID/task/TID/stat.
type procStat struct {
	Comm      string
	State     byte
	PPID      int
	Flags     uint64
	StartTime uint64 // clock ticks after boot; with the pid it names one process for good
}

func readProcStat(path string) (procStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (procStat, error) {
	// comm is between the first '(' and the LAST ')': a command may name itself "a) R (".
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("malformed stat %q", b)
	}
	fields := strings.Fields(string(b[closing+1:]))
	// After comm: state(3) ppid(4) ... flags(9) ... starttime(22), counted from 1 at pid.
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat %q", b)
	}
	st := procStat{Comm: string(b[open+1 : closing]), State: fields[0][0]}
	var err error
	if st.PPID, err = strconv.Atoi(fields[1]); err != nil {
		return procStat{}, fmt.Errorf("stat ppid: %w", err)
	}
	if st.Flags, err = strconv.ParseUint(fields[6], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat flags: %w", err)
	}
	if st.StartTime, err = strconv.ParseUint(fields[19], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat starttime: %w", err)
	}
	return st, nil
}

// fdInfo is /proc/PID/fdinfo/N.
type fdInfo struct {
	Pos     int64
	Flags   int // as the kernel prints them: f_flags, plus O_CLOEXEC when the fd has it
	MountID uint64
	Locks   []Lock
}

func readFDInfo(path string) (fdInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return fdInfo{}, err
	}
	return parseFDInfo(b)
}

func parseFDInfo(b []byte) (fdInfo, error) {
	var info fdInfo
	seen := 0
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "pos":
			info.Pos, err = strconv.ParseInt(val, 10, 64)
			seen++
		case "flags":
			var f uint64
			f, err = strconv.ParseUint(val, 8, 32)
			info.Flags = int(f)
			seen++
		case "mnt_id":
			info.MountID, err = strconv.ParseUint(val, 10, 64)
		case "lock":
			if l, ok := parseLock(val); ok {
				info.Locks = append(info.Locks, l)
			}
		}
		if err != nil {
			return fdInfo{}, fmt.Errorf("fdinfo %s: %w", key, err)
		}
	}
	if seen < 2 {
		return fdInfo{}, fmt.Errorf("malformed fdinfo %q", b)
	}
	return info, nil
}

// Lock is a lock held through an fd, as /proc/PID/fdinfo/N lists it.
type Lock struct {
	Kind  string `json:"kind"` // POSIX, FLOCK or OFDLCK
	Write bool   `json:"write"`
	Start int64  `json:"start"`
	End   int64  `json:"end"` // -1: to the end of the file
}

// parseLock reads what follows "lock:" in fdinfo, e.g.
// "1: POSIX  ADVISORY  WRITE 1234 00:2e:13 0 EOF". A waiter ("1: -> ...") holds nothing.
func parseLock(val string) (Lock, bool) {
	f := strings.Fields(val)
	if len(f) < 8 || f[1] == "->" {
		return Lock{}, false
	}
	l := Lock{Kind: f[1], Write: f[3] == "WRITE", End: -1}
	l.Start, _ = strconv.ParseInt(f[6], 10, 64)
	if f[7] != "EOF" {
		l.End, _ = strconv.ParseInt(f[7], 10, 64)
	}
	return l, true
}

// mapsEntry is one line of /proc/PID/maps.
type mapsEntry struct {
	Start, End uint64
	Perms      string
	Offset     uint64
	DevMajor   uint32
	DevMinor   uint32
	Inode      uint64
	// Path as maps prints it: '\n' shown as "\012", nothing else escaped, so it is only
	// good for a first filter; the exact name comes from map_files.
	Path string
}

func readMaps(path string) ([]mapsEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseMaps(b)
}

func parseMaps(b []byte) ([]mapsEntry, error) {
	var out []mapsEntry
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		e, err := parseMapsLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func parseMapsLine(line string) (mapsEntry, error) {
	var e mapsEntry
	rest := line
	next := func() string {
		rest = strings.TrimLeft(rest, " ")
		f, r, _ := strings.Cut(rest, " ")
		rest = r
		return f
	}
	rng, perms, off, dev, ino := next(), next(), next(), next(), next()
	start, end, ok := strings.Cut(rng, "-")
	maj, min, ok2 := strings.Cut(dev, ":")
	if !ok || !ok2 || len(perms) != 4 {
		return e, fmt.Errorf("malformed maps line %q", line)
	}
	var errs [7]error
	e.Start, errs[0] = strconv.ParseUint(start, 16, 64)
	e.End, errs[1] = strconv.ParseUint(end, 16, 64)
	e.Offset, errs[2] = strconv.ParseUint(off, 16, 64)
	var ma, mi uint64
	ma, errs[3] = strconv.ParseUint(maj, 16, 32)
	mi, errs[4] = strconv.ParseUint(min, 16, 32)
	e.Inode, errs[5] = strconv.ParseUint(ino, 10, 64)
	if err := errors.Join(errs[:]...); err != nil {
		return e, fmt.Errorf("malformed maps line %q: %w", line, err)
	}
	e.Perms, e.DevMajor, e.DevMinor = perms, uint32(ma), uint32(mi)
	// The name is padded to a column; a name's own leading spaces cannot exist (it is
	// absolute or "[heap]"-like), trailing ones can, so trim only the left.
	e.Path = strings.TrimLeft(rest, " ")
	return e, nil
}

// mapFilesName is the entry of /proc/PID/map_files for a mapping: "start-end" in lower
// hex without leading zeros, as the kernel names it.
func mapFilesName(start, end uint64) string {
	return strconv.FormatUint(start, 16) + "-" + strconv.FormatUint(end, 16)
}

// smapsWritten returns, per mapping start address, the bytes of a mapping that are no
// longer the file's: copy-on-write copies (Anonymous) and those copies swapped out (Swap).
func smapsWritten(path string) (map[uint64]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[uint64]uint64{}
	var cur uint64
	have := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key, val, ok := strings.Cut(line, ":")
		if ok && !strings.Contains(key, " ") && !strings.Contains(key, "-") {
			if key != "Anonymous" && key != "Swap" || !have {
				continue
			}
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("smaps %s: %w", key, err)
			}
			out[cur] += kb << 10
			continue
		}
		// A mapping header: "start-end perms ...".
		rng, _, _ := strings.Cut(line, " ")
		start, _, ok := strings.Cut(rng, "-")
		if !ok {
			continue
		}
		if cur, err = strconv.ParseUint(start, 16, 64); err != nil {
			return nil, fmt.Errorf("smaps header %q: %w", line, err)
		}
		have = true
	}
	return out, sc.Err()
}

// mount is one line of a mountinfo file.
type mount struct {
	ID         uint64
	Dev        uint64 // major:minor as mountinfo prints it
	Root       string // the directory of the filesystem that appears at MountPoint
	MountPoint string
	FSType     string
}

func readMountInfo(path string) ([]mount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseMountInfo(b)
}

func parseMountInfo(b []byte) ([]mount, error) {
	var out []mount
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+1 >= len(f) {
			return nil, fmt.Errorf("malformed mountinfo line %q", line)
		}
		id, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("mountinfo id %q: %w", line, err)
		}
		maj, min, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo device in %q", line)
		}
		out = append(out, mount{
			ID:         id,
			Dev:        unix.Mkdev(uint32(ma), uint32(mi)),
			Root:       unescapeOctal(f[3]),
			MountPoint: unescapeOctal(f[4]),
			FSType:     f[sep+1],
		})
	}
	return out, nil
}

// unescapeOctal undoes the "\ooo" escapes mountinfo uses for space, tab, newline and
// backslash (and /proc/net/unix never uses; maps only for newline).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escapeNewlines is how maps and smaps show a name: only '\n' escaped.
func escapeNewlines(s string) string { return strings.ReplaceAll(s, "\n", `\012`) }

// unixBinding is a unix socket bound to a filesystem name, from /proc/PID/net/unix.
type unixBinding struct {
	Inode uint64 // the socket's inode in sockfs, as in an fd link "socket:[N]"
	Path  string // as given to bind(2): possibly relative, resolved in the binder's view
	// Listening (__SO_ACCEPTCON) or datagram: the socket that holds the name. A stream
	// socket returned by accept shows its listener's name too, but holds nothing.
	HoldsName bool
}

// soAcceptCon is __SO_ACCEPTCON, the "Flags" bit of a listening socket in /proc/net/unix.
const soAcceptCon = 1 << 16

// readUnixBindings reads the unix sockets of one network namespace that are bound to a
// path (abstract names start with '@' and live in no filesystem).
func readUnixBindings(path string) ([]unixBinding, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseUnixBindings(b), nil
}

func parseUnixBindings(b []byte) []unixBinding {
	// The kernel prints a bound name raw, so a name with '\n' spills onto the next
	// line; an entry line starts with "<hex pointer>: ", anything else continues a name.
	var out []unixBinding
	lines := strings.Split(string(b), "\n")
	for i := 1; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) < 7 || !strings.HasSuffix(f[0], ":") || !isHex(strings.TrimSuffix(f[0], ":")) {
			continue
		}
		ino, err := strconv.ParseUint(f[6], 10, 64)
		flags, err1 := strconv.ParseUint(f[3], 16, 32)
		typ, err2 := strconv.ParseUint(f[4], 16, 32)
		if err != nil || err1 != nil || err2 != nil || len(f) == 7 {
			continue
		}
		// The name is everything after the inode column and one space, verbatim.
		name := lines[i][fieldEnd(lines[i], 6)+1:]
		for i+1 < len(lines) && !looksLikeUnixEntry(lines[i+1]) && !(i+1 == len(lines)-1 && lines[i+1] == "") {
			i++
			name += "\n" + lines[i]
		}
		if strings.HasPrefix(name, "@") {
			continue
		}
		holds := flags&soAcceptCon != 0 || typ == unix.SOCK_DGRAM
		out = append(out, unixBinding{Inode: ino, Path: name, HoldsName: holds})
	}
	return out
}

func looksLikeUnixEntry(line string) bool {
	f := strings.Fields(line)
	return len(f) >= 7 && strings.HasSuffix(f[0], ":") && isHex(strings.TrimSuffix(f[0], ":"))
}

// fieldEnd returns the byte offset just past the n-th (0-based) space-separated field.
func fieldEnd(line string, n int) int {
	i := 0
	for field := 0; ; field++ {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		for i < len(line) && line[i] != ' ' {
			i++
		}
		if field == n || i == len(line) {
			return i
		}
	}
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// statxFollow stats what a /proc magic link points at (fd/N, cwd, exe, map_files/...),
// with the mount id: the one thing that tells which mount, bind mounts included, an
// open file was reached through.
func statxFollow(path string) (unix.Statx_t, error) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx)
	return stx, err
}

// gone reports whether err means the process or the fd went away while we looked: not a
// failure of discovery, the item simply no longer exists.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}
