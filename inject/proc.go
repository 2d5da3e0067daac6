package inject

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
)

// pfKthread is PF_KTHREAD in the flags field of /proc/PID/stat.
const pfKthread = 0x00200000

// procInfo is what Attach checks before it touches a process.
type procInfo struct {
	state     byte // R, S, D, T, t, Z, ...
	flags     uint64
	cpu       int // the CPU it last ran on
	tgid      int
	tracerPid int
}

func readProcInfo(pid int) (procInfo, error) {
	var info procInfo
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return info, ErrNoProcess
		}
		return info, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return info, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, stat)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 37 {
		return info, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, stat)
	}
	info.state = fields[0][0]
	// Field 9 of stat is flags; fields here start at field 3 (state).
	if info.flags, err = strconv.ParseUint(fields[6], 10, 64); err != nil {
		return info, fmt.Errorf("flags in /proc/%d/stat: %w", pid, err)
	}
	info.cpu, _ = strconv.Atoi(fields[36]) // field 39, processor
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return info, ErrNoProcess
		}
		return info, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "Tgid":
			info.tgid, _ = strconv.Atoi(strings.TrimSpace(v))
		case "TracerPid":
			info.tracerPid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return info, nil
}

// listThreads returns the thread ids of pid, sorted.
func listThreads(pid int) ([]int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNoProcess
		}
		return nil, err
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	return tids, nil
}

// mapping is one line of /proc/PID/maps, as far as finding code goes.
type mapping struct {
	start, end uintptr
	perms      string
	name       string
}

func readMappings(pid int) ([]mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	var maps []mapping
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := mapping{start: uintptr(start), end: uintptr(end), perms: f[1]}
		if len(f) >= 6 {
			m.name = f[5]
		}
		maps = append(maps, m)
	}
	return maps, nil
}
