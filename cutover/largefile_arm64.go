package cutover

// kernelOLargefile: see largefile_amd64.go; arm64 numbers its flags differently.
const kernelOLargefile = 0o400000
