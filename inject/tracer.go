package inject

import "runtime"

// tracer runs functions on one OS thread for the whole life of a ptrace session, because
// the kernel accepts ptrace requests for a tracee only from the thread that attached it.
type tracer struct {
	work chan func()
}

func newTracer() *tracer {
	t := &tracer{work: make(chan func())}
	go func() {
		// Never unlocked: when the session ends the goroutine exits and the runtime ends
		// its thread, and with it any ptrace relation the thread might still hold (the
		// kernel then detaches the tracees itself).
		runtime.LockOSThread()
		for f := range t.work {
			f()
		}
	}()
	return t
}

// do runs f on the tracer thread and returns its error.
func (t *tracer) do(f func() error) error {
	errc := make(chan error, 1)
	t.work <- func() { errc <- f() }
	return <-errc
}

// close ends the tracer goroutine and so its thread.
func (t *tracer) close() { close(t.work) }
