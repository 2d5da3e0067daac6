package inject

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDbgDrift(t *testing.T) {
	c := startChild(t, nil, buildTestdata(t, "sleepers"), "1")
	c.expect(t, "ready")
	p := attach(t, c.pid)
	p.Do(func() error {
		for batch := 0; batch < 10; batch++ {
			ts := make([]time.Duration, 1000)
			for i := range ts {
				t0 := time.Now()
				p.Syscall(unix.SYS_GETPID)
				ts[i] = time.Since(t0)
			}
			fmt.Print(median(ts), " ")
		}
		return nil
	})
	fmt.Println(len(p.worker.deferred))
}
