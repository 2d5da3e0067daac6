package inject

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// tracer runs functions on one OS thread for the whole life of a ptrace session, because
// the kernel accepts ptrace requests for a tracee only from the thread that attached it.
type tracer struct {
	work chan func()
	tid  int // the OS thread
}

func newTracer() *tracer {
	t := &tracer{work: make(chan func())}
	ready := make(chan struct{})
	go t.serve(ready)
	<-ready
	return t
}

// serve runs the work on a locked thread that is never unlocked: when the session ends the
// goroutine exits, the runtime ends its thread, and the kernel releases whatever that
// thread still traced (a thread that exited while held, say). The main thread is the one
// thread the runtime never ends, so serve moves off it.
func (t *tracer) serve(ready chan struct{}) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		go t.serve(ready) // cannot land on this thread while we hold it
		<-ready
		runtime.UnlockOSThread()
		return
	}
	t.tid = unix.Gettid()
	close(ready)
	for f := range t.work {
		f()
	}
}

// do runs f on the tracer thread and returns its error. Called on the tracer thread
// itself (inside Process.Do), it runs f at once: handing work to a sleeping thread costs
// more than an injected syscall, so batches of calls are made there.
func (t *tracer) do(f func() error) error {
	if unix.Gettid() == t.tid {
		return f()
	}
	errc := make(chan error, 1)
	t.work <- func() { errc <- f() }
	return <-errc
}

// close ends the tracer goroutine and so its thread.
func (t *tracer) close() { close(t.work) }
