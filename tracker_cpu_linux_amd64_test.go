package marketplace

import (
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

// TestUsageTrackerCPUIDIsTheCPU pins the test's thread to each CPU it may
// use in turn and checks that cpuID names that CPU: the lanes' locality
// rests on it (their correctness does not).
func TestUsageTrackerCPUIDIsTheCPU(t *testing.T) {
	if !cpuLanes() {
		t.Skip("this CPU has no RDPID; Record picks lanes from a sync.Pool")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var orig [16]uint64 // a mask of 1024 CPUs
	if err := schedAffinity(syscall.SYS_SCHED_GETAFFINITY, &orig); err != nil {
		t.Fatalf("sched_getaffinity: %v", err)
	}
	defer func() {
		if err := schedAffinity(syscall.SYS_SCHED_SETAFFINITY, &orig); err != nil {
			t.Errorf("restoring the affinity: %v", err)
		}
	}()
	tried := 0
	for cpu := range len(orig) * 64 {
		if orig[cpu/64]&(1<<(cpu%64)) == 0 {
			continue
		}
		var one [16]uint64
		one[cpu/64] = 1 << (cpu % 64)
		if err := schedAffinity(syscall.SYS_SCHED_SETAFFINITY, &one); err != nil {
			t.Fatalf("sched_setaffinity to CPU %d: %v", cpu, err)
		}
		if got := cpuID(); got != uint32(cpu) {
			t.Errorf("on CPU %d, cpuID() = %d", cpu, got)
		}
		tried++
	}
	if tried == 0 {
		t.Fatal("the affinity mask names no CPU")
	}
}

func schedAffinity(trap uintptr, mask *[16]uint64) error {
	if _, _, errno := syscall.RawSyscall(trap, 0, unsafe.Sizeof(*mask), uintptr(unsafe.Pointer(mask))); errno != 0 {
		return errno
	}
	return nil
}
