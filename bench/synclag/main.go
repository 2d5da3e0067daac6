// Command synclag measures a running mirror's follow lag: it changes files under SRC
// and times how long until DST holds the same bytes. It drives any mirror (livemig
// sync, lsyncd) the same way, so bench/sync.sh can put them side by side.
//
//	synclag -mode small  -src S -dst D [-n 500 -rate 100]  # new small files at a steady rate
//	synclag -mode append -src S -dst D [-n 50]             # 4 KiB appended to SRC/big
//	synclag -mode burst  -src S -dst D [-n 1000]           # n new files at once, until all are there
//
// It prints one line: mode, count, p50, p99 and max in milliseconds.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"time"
)

const poll = 100 * time.Microsecond

func main() {
	mode := flag.String("mode", "small", "small, append or burst")
	src := flag.String("src", "", "SRC of the running mirror")
	dst := flag.String("dst", "", "DST of the running mirror")
	n := flag.Int("n", 0, "how many changes (default: 500 small, 50 appends, 1000 files)")
	rate := flag.Float64("rate", 100, "small files per second")
	timeout := flag.Duration("timeout", 30*time.Second, "give up on one change after this")
	flag.Parse()
	if *src == "" || *dst == "" {
		fmt.Fprintln(os.Stderr, "synclag: -src and -dst are required")
		os.Exit(2)
	}
	var lat []time.Duration
	var err error
	switch *mode {
	case "small":
		lat, err = small(*src, *dst, def(*n, 500), *rate, *timeout)
	case "append":
		lat, err = appendTail(*src, *dst, def(*n, 50), *timeout)
	case "burst":
		lat, err = burst(*src, *dst, def(*n, 1000), *timeout)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "synclag:", err)
		os.Exit(1)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("%s n=%d p50=%.2f p99=%.2f max=%.2f\n", *mode, len(lat), ms(q(0.50)), ms(q(0.99)), ms(lat[len(lat)-1]))
}

func def(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// waitFor polls until ok holds, returning how long it took from start.
func waitFor(start time.Time, timeout time.Duration, what string, ok func() bool) (time.Duration, error) {
	for !ok() {
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(poll)
	}
	return time.Since(start), nil
}

// mirroredDir makes a new directory under SRC and waits until the mirror has it.
func mirroredDir(src, dst, prefix string, timeout time.Duration) (string, error) {
	dir := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	if err := os.Mkdir(filepath.Join(src, dir), 0o755); err != nil {
		return "", err
	}
	_, err := waitFor(time.Now(), timeout, "the directory", func() bool {
		_, err := os.Stat(filepath.Join(dst, dir))
		return err == nil
	})
	return dir, err
}

func sameContent(path string, want []byte) bool {
	got, err := os.ReadFile(path)
	return err == nil && bytes.Equal(got, want)
}

func small(src, dst string, n int, rate float64, timeout time.Duration) ([]time.Duration, error) {
	dir, err := mirroredDir(src, dst, "lag-small", timeout)
	if err != nil {
		return nil, err
	}
	interval := time.Duration(float64(time.Second) / rate)
	data := make([]byte, 4096)
	var lat []time.Duration
	next := time.Now()
	for i := range n {
		rand.Read(data)
		name := filepath.Join(dir, fmt.Sprintf("f%d", i))
		start := time.Now()
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			return nil, err
		}
		d, err := waitFor(start, timeout, name, func() bool { return sameContent(filepath.Join(dst, name), data) })
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
		next = next.Add(interval)
		time.Sleep(time.Until(next))
	}
	return lat, nil
}

// appendTail appends 4 KiB to SRC/big (made by the caller before the mirror started)
// and waits until DST's copy has the same size and the same last 4 KiB.
func appendTail(src, dst string, n int, timeout time.Duration) ([]time.Duration, error) {
	s, d := filepath.Join(src, "big"), filepath.Join(dst, "big")
	tail := make([]byte, 4096)
	var lat []time.Duration
	for range n {
		st, err := os.Stat(s)
		if err != nil {
			return nil, err
		}
		if _, err := waitFor(time.Now(), timeout, "DST/big to catch up", func() bool {
			dt, err := os.Stat(d)
			return err == nil && dt.Size() == st.Size()
		}); err != nil {
			return nil, err
		}
		rand.Read(tail)
		want := st.Size() + int64(len(tail))
		f, err := os.OpenFile(s, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		_, err = f.Write(tail)
		f.Close()
		if err != nil {
			return nil, err
		}
		got := make([]byte, len(tail))
		dur, err := waitFor(start, timeout, "the appended tail", func() bool {
			f, err := os.Open(d)
			if err != nil {
				return false
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil || fi.Size() != want {
				return false
			}
			_, err = f.ReadAt(got, want-int64(len(tail)))
			return err == nil && bytes.Equal(got, tail)
		})
		if err != nil {
			return nil, err
		}
		lat = append(lat, dur)
		time.Sleep(20 * time.Millisecond)
	}
	return lat, nil
}

// burst writes n files of 1 KiB into one existing directory as fast as it can and
// returns one figure: the time from the first write until the last file is at DST.
func burst(src, dst string, n int, timeout time.Duration) ([]time.Duration, error) {
	dir, err := mirroredDir(src, dst, "lag-burst", timeout)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 1024)
	start := time.Now()
	for i := range n {
		if err := os.WriteFile(filepath.Join(src, dir, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			return nil, err
		}
	}
	pending := make(map[string]bool, n)
	for i := range n {
		pending[fmt.Sprintf("f%d", i)] = true
	}
	d, err := waitFor(start, timeout, "the burst", func() bool {
		for name := range pending {
			if fi, err := os.Stat(filepath.Join(dst, dir, name)); err != nil || fi.Size() != int64(len(data)) {
				return false
			}
			delete(pending, name)
		}
		return true
	})
	return []time.Duration{d}, err
}
