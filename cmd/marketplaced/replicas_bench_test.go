package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReplicasIngest is durable ingest over HTTP into one PostgreSQL
// database through one daemon and through three (separate processes of the
// real binary, -replicas N): 64 writers post batches of 100 records, the
// writers spread evenly over the daemons; one op is one batch. EventIDs
// gives every record a unique event id; NoEventIDs none. Besides records/s
// it reports the daemons' CPU per record, read from /proc (daemon-cpu-ns/op
// is per record, as records/s), which does not depend on the share of the
// machine the daemons got.
func BenchmarkReplicasIngest(b *testing.B) {
	cat := filepath.Join("..", "..", "server", "testdata", "catalogue.json")
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprint("replicas=", n), func(b *testing.B) {
			dbURL := pgDatabase(b)
			var rs []*replica
			for i := range n {
				r := newReplica(b, fmt.Sprint("bench-", i), []string{"-catalogue", cat, "-replicas", fmt.Sprint(n), "-log-level", "warn"},
					[]string{"MARKETPLACED_STORE=" + dbURL})
				rs = append(rs, r)
			}
			for _, r := range rs {
				r.start(b)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
			for _, ids := range []bool{true, false} {
				name := "NoEventIDs"
				if ids {
					name = "EventIDs"
				}
				b.Run(name, func(b *testing.B) {
					run := time.Now().UnixNano()
					var next atomic.Int64
					cpu0 := daemonCPU(rs)
					b.ResetTimer()
					start := time.Now()
					var wg sync.WaitGroup
					for w := range 64 {
						wg.Go(func() {
							base := rs[w%len(rs)].url()
							var buf bytes.Buffer
							for {
								i := next.Add(1) - 1
								if i >= int64(b.N) {
									return
								}
								buf.Reset()
								buf.WriteString(`{"records":[`)
								for j := range 100 {
									if j > 0 {
										buf.WriteByte(',')
									}
									buf.WriteString(`{`)
									if ids {
										buf.WriteString(`"event_id":"` + strconv.FormatInt(run, 36) + "-" + strconv.FormatInt(i*100+int64(j), 36) + `",`)
									}
									buf.WriteString(`"provider":"aws","customer":"cust-` + strconv.Itoa(int(i*100+int64(j))%10000) + `","metric":"tokens","quantity":` + strconv.Itoa(1+j%97) + `}`)
								}
								buf.WriteString(`]}`)
								if st, _, err := post(b.Context(), client, base, "", buf.Bytes()); err != nil || st != 200 {
									b.Errorf("POST /v1/usage: %d %v", st, err)
									return
								}
							}
						})
					}
					wg.Wait()
					elapsed := time.Since(start)
					b.StopTimer()
					records := float64(b.N) * 100
					b.ReportMetric(records/elapsed.Seconds(), "records/s")
					b.ReportMetric(float64(daemonCPU(rs)-cpu0)/records, "daemon-cpu-ns/op")
				})
			}
			for _, r := range rs {
				if err := r.stop(b); err != nil {
					b.Errorf("%s: exit after SIGTERM: %v", r.name, err)
				}
			}
		})
	}
}

// daemonCPU sums the user and system CPU time of the running replicas, in
// nanoseconds, from /proc/PID/stat (clock ticks of 10 ms).
func daemonCPU(rs []*replica) int64 {
	var ns int64
	for _, r := range rs {
		r.mu.Lock()
		pid := r.cmd.Process.Pid
		r.mu.Unlock()
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		ns += (utime + stime) * int64(10*time.Millisecond)
	}
	return ns
}
