package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/sqlite"
)

const key = "load-test-key-0123456789abcdef"

// marketplaced builds the daemon once per test run.
var marketplaced = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "marketplaced-load-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "marketplaced")
	if out, err := exec.Command("go", "build", "-o", bin, "../marketplaced").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

type daemon struct {
	url string
	pid int
}

// startDaemon runs the real marketplaced serve on a fresh data folder in
// which customers cust-0 … cust-(subscribed-1) have active AWS subscriptions.
func startDaemon(tb testing.TB, subscribed int) daemon {
	tb.Helper()
	bin, err := marketplaced()
	if err != nil {
		tb.Fatal(err)
	}
	data := tb.TempDir()
	if subscribed > 0 {
		store, err := sqlite.Open(context.Background(), filepath.Join(data, "marketplace.db"))
		if err != nil {
			tb.Fatal(err)
		}
		for i := range subscribed {
			c := "cust-" + strconv.Itoa(i)
			if _, err := store.PutSubscription(context.Background(), marketplace.Subscription{ID: "sub-" + c, CustomerID: c,
				Provider: marketplace.AWS, Status: marketplace.StatusActive, Plan: "pro", Updated: time.Now()}); err != nil {
				tb.Fatal(err)
			}
		}
		store.Close()
	}
	cmd := exec.Command(bin, "serve", "-addr", "127.0.0.1:0", "-data", data, "-log-level", "warn",
		"-max-in-flight", "256", "-catalogue", filepath.Join("..", "..", "server", "testdata", "catalogue.json"))
	cmd.Env = append(os.Environ(), "MARKETPLACED_API_KEYS="+key)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		tb.Fatal("marketplaced serve printed nothing")
	}
	m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(sc.Text())
	if m == nil {
		tb.Fatalf("unexpected output %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return daemon{url: m[1], pid: cmd.Process.Pid}
}

// cpuOf returns a process's CPU time from /proc (user + system).
func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which ends with ')': utime and stime
	// are fields 14 and 15 of the line, in clock ticks (100 per second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

// TestLoadGenerator runs each mode briefly against the real daemon: every
// request succeeds and the counts add up.
func TestLoadGenerator(t *testing.T) {
	d := startDaemon(t, 50)
	res, err := Ingest(t.Context(), Options{URL: d.url, APIKey: key, Duration: 700 * time.Millisecond, Concurrency: 4, Batch: 200, Customers: 50})
	if err != nil || res.Errors != 0 || res.Requests == 0 || res.Records != 200*res.Requests {
		t.Fatalf("ingest: %v, %v", res, err)
	}
	res, err = Check(t.Context(), Options{URL: d.url, APIKey: key, Duration: 500 * time.Millisecond, Concurrency: 4, Customers: 50})
	if err != nil || res.Errors != 0 || res.Requests == 0 || res.P99 == 0 {
		t.Fatalf("check: %v, %v", res, err)
	}
	// A customer without a subscription is refused, and the generator says so.
	_, err = Check(t.Context(), Options{URL: d.url, APIKey: key, Duration: 200 * time.Millisecond, Concurrency: 1, Customers: 51, Provider: "gcp"})
	if err == nil {
		t.Fatal("checks for unsubscribed customers passed")
	}
}

var benchDuration = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("LOAD_DURATION")); err == nil {
		return d
	}
	return 10 * time.Second
}()

func report(b *testing.B, d daemon, res Result, daemonCPU time.Duration) {
	b.ReportMetric(float64(res.Requests)/res.Elapsed.Seconds(), "requests/s")
	if res.Records > 0 {
		b.ReportMetric(float64(res.Records)/res.Elapsed.Seconds(), "records/s")
	}
	b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(100*res.CPUShare, "loadgen-cpu-%")
	b.ReportMetric(100*daemonCPU.Seconds()/res.Elapsed.Seconds()/float64(runtime.NumCPU()), "daemon-cpu-%")
	// CPU per request, of each side: on a machine shared with other work
	// the rate says how much CPU the daemon got; these say what it needs.
	if res.Requests > 0 {
		loadgenCPU := res.CPUShare * res.Elapsed.Seconds() * float64(runtime.NumCPU())
		b.ReportMetric(daemonCPU.Seconds()*1e6/float64(res.Requests), "daemon-cpu-µs/req")
		b.ReportMetric(loadgenCPU*1e6/float64(res.Requests), "loadgen-cpu-µs/req")
	}
	b.ReportMetric(0, "ns/op")
}

// benchLoad runs one load of benchDuration (LOAD_DURATION) per iteration
// against a fresh daemon; run with -benchtime=1x.
func benchLoad(b *testing.B, subscribed int, load func(context.Context, Options) (Result, error), o Options) {
	d := startDaemon(b, subscribed)
	o.URL, o.APIKey, o.Duration = d.url, key, benchDuration
	// Warm up: connections, caches, the daemon's heap.
	warm := o
	warm.Duration = time.Second
	if _, err := load(b.Context(), warm); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c0, err := cpuOf(d.pid)
		if err != nil {
			b.Fatal(err)
		}
		res, err := load(b.Context(), o)
		if err != nil {
			b.Fatal(err)
		}
		c1, _ := cpuOf(d.pid)
		report(b, d, res, c1-c0)
		b.Log(res)
	}
}

func BenchmarkHTTPIngest(b *testing.B) {
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"EventIDs", Options{Concurrency: 8, Batch: 1000, Customers: 2500}},
		{"NoEventIDs", Options{Concurrency: 8, Batch: 1000, Customers: 2500, NoEventIDs: true}},
		{"IdempotencyKey", Options{Concurrency: 8, Batch: 1000, Customers: 2500, NoEventIDs: true, BatchKeys: true}},
	} {
		b.Run(c.name, func(b *testing.B) { benchLoad(b, 0, Ingest, c.o) })
	}
}

func BenchmarkHTTPEntitlementCheck(b *testing.B) {
	benchLoad(b, 1000, Check, Options{Concurrency: 32, Customers: 1000})
}
