package marketplace

// cpuLanes reports whether Record can pick its lane by the CPU it runs on:
// on linux/amd64 with the RDPID instruction, which reads the processor id
// that Linux keeps in the TSC_AUX register for its own vgetcpu (node in bits
// 12 and up, CPU number below) in a few nanoseconds.
func cpuLanes() bool { return hasRDPID() }

// cpuID returns the number of the CPU the calling thread was running on a
// moment ago; the caller may have moved since, so it is a hint only.
func cpuID() uint32 { return rdpid() & 0xfff }

// hasRDPID reports whether the CPU has the RDPID instruction.
func hasRDPID() bool

// rdpid executes RDPID: the TSC_AUX register. The caller must have checked
// hasRDPID.
func rdpid() uint32
