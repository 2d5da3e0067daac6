// gowriter is writer.c in Go: cwd and files plain, append, cloexec under os.Args[1]
// (Go opens every file close-on-exec), line N to each every 2 ms, and cwdfile by a
// relative path. Run with GOMAXPROCS=4; it keeps goroutines busy meanwhile.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if err := os.Chdir(os.Args[1]); err != nil {
		panic(err)
	}
	plain, err1 := os.OpenFile("plain", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	app, err2 := os.OpenFile("append", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	cloexec, err3 := os.OpenFile("cloexec", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err1 != nil || err2 != nil || err3 != nil {
		panic(fmt.Sprint(err1, err2, err3))
	}
	for i := 0; i < 3; i++ {
		go func() {
			for x := 0; ; x++ {
				_ = x * x
			}
		}()
	}
	fmt.Printf("ready %d %d %d\n", plain.Fd(), app.Fd(), cloexec.Fd())
	for n := 0; ; n++ {
		line := []byte(fmt.Sprintf("%d\n", n))
		for _, f := range []*os.File{plain, app, cloexec} {
			if _, err := f.Write(line); err != nil {
				panic(err)
			}
		}
		c, err := os.OpenFile("cwdfile", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			panic(err)
		}
		c.Write(line)
		c.Close()
		time.Sleep(2 * time.Millisecond)
	}
}
