// Package inject runs system calls inside another, live process through ptrace, with no
// debugger: Attach stops every thread of the process (invisibly to it and its parent),
// Syscall runs a call in the process's own context (fd table, cwd, root, mount
// namespace), scratch memory carries paths and structs into it, and Detach leaves every
// register, pending signal and byte as it was. On top of these sit the fd primitives a
// cutover needs: Swap, Spare/Restore and Chdir/Fchdir.
//
// Every ptrace request for one process is made from a single goroutine locked to its OS
// thread (ptrace is per thread). Per-architecture details — registers, the syscall
// instruction — live in the _amd64.go and _arm64.go files; the rest reads like the design.
//
// The package knows nothing about files trees, mirrors or cutovers.
package inject
