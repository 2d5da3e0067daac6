package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/livemig/livemig/cutover"
)

// postCheck is migrate's check after the cutover, with the processes running again: in
// /proc, does anything of a moved process still reach the old storage? The cutover has
// already compared, inside the pause, the content of every moved file on both sides and
// the device and inode each swapped item reaches; this looks again once they run, and
// also catches what they opened meanwhile by an absolute path under SRC (which, without
// --remount, still names the old storage).
type postCheck struct {
	Processes  int      `json:"processes"`
	StillOnOld []string `json:"still_on_old"` // "pid 12 fd 3 -> /srv/data/x", known leftovers excluded
	OK         bool     `json:"ok"`
}

func checkMoved(rep *cutover.Report, oldDev uint64, cfg cutover.Config) *postCheck {
	pc := &postCheck{StillOnOld: []string{}}
	if rep == nil {
		return pc
	}
	for _, p := range rep.Processes {
		known := map[string]bool{}
		for _, l := range p.Leftovers {
			known[relToSource(l.Path, cfg.Src)] = true
		}
		dir := "/proc/" + strconv.Itoa(p.PID)
		if _, err := os.Stat(dir); err != nil {
			continue // exited since: nothing of it is anywhere
		}
		pc.Processes++
		links := []string{"cwd", "root"}
		if entries, err := os.ReadDir(dir + "/fd"); err == nil {
			for _, e := range entries {
				links = append(links, "fd/"+e.Name())
			}
		}
		for _, l := range links {
			var st unix.Stat_t
			if unix.Stat(dir+"/"+l, &st) != nil || uint64(st.Dev) != oldDev {
				continue
			}
			target, _ := os.Readlink(dir + "/" + l)
			target = strings.TrimSuffix(target, " (deleted)")
			if (cfg.Remount || underSource(target, cfg.Src)) && !known[relToSource(target, cfg.Src)] {
				pc.StillOnOld = append(pc.StillOnOld, fmt.Sprintf("pid %d %s -> %s", p.PID, strings.Replace(l, "/", " ", 1), target))
			}
		}
		for _, m := range mapsOn(dir+"/maps", oldDev) {
			if (cfg.Remount || underSource(m, cfg.Src)) && !known[relToSource(m, cfg.Src)] {
				pc.StillOnOld = append(pc.StillOnOld, fmt.Sprintf("pid %d map -> %s", p.PID, m))
			}
		}
	}
	pc.OK = len(pc.StillOnOld) == 0
	return pc
}

func underSource(path, src string) bool { return path == src || strings.HasPrefix(path, src+"/") }

// relToSource names path relative to SRC, or to the directory the old filesystem was
// put aside in (/tmp/livemig-old-N/...) when a leftover kept it mounted there.
func relToSource(path, src string) string {
	if rel, ok := strings.CutPrefix(path, src+"/"); ok {
		return rel
	}
	if i := strings.Index(path, "/livemig-old-"); i >= 0 {
		rest := path[i+1:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return rest[j+1:]
		}
		return ""
	}
	return path
}

// mapsOn lists the paths of pid's mappings (from its maps file) on device dev.
func mapsOn(mapsFile string, dev uint64) []string {
	f, err := os.Open(mapsFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset major:minor inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[4] == "0" {
			continue
		}
		mm := strings.SplitN(fields[3], ":", 2)
		if len(mm) != 2 {
			continue
		}
		major, err1 := strconv.ParseUint(mm[0], 16, 32)
		minor, err2 := strconv.ParseUint(mm[1], 16, 32)
		if err1 != nil || err2 != nil || unix.Mkdev(uint32(major), uint32(minor)) != dev {
			continue
		}
		path := strings.TrimSuffix(strings.Join(fields[5:], " "), " (deleted)")
		if !seen[path] {
			seen[path] = true
			out = append(out, path)
		}
	}
	return out
}
