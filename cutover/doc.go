// Package cutover moves the processes that use SRC onto DST: discover, freeze, final
// delta, optional remount, swap, verify, resume — all or nothing.
//
// It drives the mirror (livesync) for the final delta and inject for the swap; it does
// not know how either is done.
package cutover
