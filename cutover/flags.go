package cutover

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// openFlagNames are the open(2) flags worth showing, in the order they are printed.
var openFlagNames = []struct {
	flag int
	name string
}{
	{unix.O_APPEND, "O_APPEND"},
	{unix.O_NONBLOCK, "O_NONBLOCK"},
	{unix.O_SYNC, "O_SYNC"}, // before O_DSYNC: O_SYNC includes its bit
	{unix.O_DSYNC, "O_DSYNC"},
	{unix.O_DIRECT, "O_DIRECT"},
	{unix.O_DIRECTORY, "O_DIRECTORY"},
	{unix.O_NOFOLLOW, "O_NOFOLLOW"},
	{unix.O_NOATIME, "O_NOATIME"},
	{unix.O_PATH, "O_PATH"},
	{kernelOLargefile, "O_LARGEFILE"},
	{unix.O_CLOEXEC, "O_CLOEXEC"},
}

// FlagNames spells open(2) flags as fdinfo reports them: "O_WRONLY|O_APPEND". Bits it
// does not know are shown in octal, so nothing is silently dropped.
func FlagNames(flags int) string {
	names := []string{[]string{"O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"}[flags&unix.O_ACCMODE]}
	rest := flags &^ unix.O_ACCMODE
	for _, f := range openFlagNames {
		if rest&f.flag == f.flag && f.flag != 0 {
			names = append(names, f.name)
			rest &^= f.flag
		}
	}
	if rest != 0 {
		names = append(names, "0"+strconv.FormatInt(int64(rest), 8))
	}
	return strings.Join(names, "|")
}
