//go:build !(linux && amd64)

package marketplace

// cpuLanes reports whether Record can pick its lane by the CPU it runs on.
// Only linux/amd64 has a way cheaper than sync.Pool's per-P cache; see
// tracker_cpu_linux_amd64.go.
func cpuLanes() bool { return false }

// cpuID is not called where cpuLanes is false.
func cpuID() uint32 { return 0 }
