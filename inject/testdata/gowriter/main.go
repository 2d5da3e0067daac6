// gowriter opens os.Args[1], keeps 4 goroutines busy and writes their counts to the file
// every 5 ms; run with GOMAXPROCS=4. It prints "fd N" for the file's descriptor.
package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	var counts [4]atomic.Uint64
	for i := range counts {
		go func() {
			for {
				counts[i].Add(1)
			}
		}()
	}
	fmt.Printf("fd %d\n", f.Fd())
	for {
		fmt.Fprintf(f, "%d %d %d %d\n", counts[0].Load(), counts[1].Load(), counts[2].Load(), counts[3].Load())
		time.Sleep(5 * time.Millisecond)
	}
}
