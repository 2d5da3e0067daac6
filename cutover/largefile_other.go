//go:build !amd64 && !arm64

package cutover

// kernelOLargefile: unknown here, so the bit is shown in octal rather than named.
const kernelOLargefile = 0
