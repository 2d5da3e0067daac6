package cutover

// kernelOLargefile is the O_LARGEFILE bit the kernel sets on every file opened by a
// 64-bit process and shows in fdinfo; x/sys/unix defines O_LARGEFILE as 0 (glibc's view).
const kernelOLargefile = 0o100000
