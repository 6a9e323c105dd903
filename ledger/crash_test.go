package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/ledger/ledgertest"
	"github.com/saasmarket/marketplace/sqlite"
)

// The crash test runs the ledger in a child process (this test binary,
// running TestCrashChild) that ingests a fixed workload, seals it and
// reports it over HTTP to FakeClouds served by the parent, which drop
// responses after applying them. The parent SIGKILLs the child at random
// moments and starts it again, many times, then lets one run finish. The
// bill must then hold the workload exactly once.

// Environment of the child.
const (
	crashEnvDir    = "LEDGER_CRASH_DIR"    // data folder
	crashEnvURLs   = "LEDGER_CRASH_URLS"   // provider=url,provider=url,...
	crashEnvNow    = "LEDGER_CRASH_NOW"    // the fake time at the anchor, RFC 3339
	crashEnvAnchor = "LEDGER_CRASH_ANCHOR" // wall time of the anchor, unix nanoseconds
	crashEnvRun    = "LEDGER_CRASH_RUN"    // run number, seeds the ingest order
)

// crashNow is the child's clock at the parent's start. The workload's
// hours (09:00 to 11:00) seal at once; the clock runs on from there, far
// from the next seal, so every run seals the same buckets.
var crashNow = time.Date(2026, 3, 10, 12, 20, 0, 0, time.UTC)

var crashUnits = map[string]int64{"tokens_1m": 1_000_000}

// crashWorkload is 20 customers (spread over the three clouds) × 2
// dimensions × 3 hours, 25 records each: 3000 records with event ids.
func crashWorkload() []ledger.Record {
	rng := rand.New(rand.NewPCG(7, 7))
	providers := marketplace.Providers()
	var recs []ledger.Record
	for c := range 20 {
		for _, dim := range []string{"requests", "tokens_1m"} {
			for h := 9; h <= 11; h++ {
				for range 25 {
					q := 1 + rng.Int64N(100)
					if dim == "tokens_1m" {
						q = 10_000 + rng.Int64N(190_000)
					}
					recs = append(recs, ledger.Record{
						Provider: providers[c%len(providers)], Customer: fmt.Sprintf("cust-%02d", c),
						Dimension: dim, Quantity: q, Time: onDay(h, rng.IntN(60)),
						EventID: fmt.Sprintf("crash-%05d", len(recs)),
					})
				}
			}
		}
	}
	return recs
}

// crashExpected is the bill the workload must produce: per hour, the sum
// plus the series' carry, in whole units; the remainder carries on.
func crashExpected(recs []ledger.Record) map[lineKey]int64 {
	raw := expectRaw(recs)
	keys := make([]lineKey, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b lineKey) int { return a.hour.Compare(b.hour) })
	carry := make(map[lineKey]int64) // by series (hour zero)
	want := make(map[lineKey]int64)
	for _, k := range keys {
		unit := crashUnits[k.dimension]
		if unit == 0 {
			unit = 1
		}
		s := k
		s.hour = time.Time{}
		total := raw[k] + carry[s]
		if total/unit > 0 {
			want[k] = total / unit
		}
		carry[s] = total % unit
	}
	return want
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: starts and kills processes")
	}
	const kills = 16
	dir := t.TempDir()
	var clouds []*ledgertest.FakeCloud
	var urls []string
	for i, p := range marketplace.Providers() {
		c := ledgertest.NewFakeCloud(ledgertest.Config{Provider: p, Seed: uint64(100 + i), Faults: ledgertest.Faults{
			DropResponse: 0.3, NotApplied: 0.1, RetryAfter: 5 * time.Millisecond, Latency: 3 * time.Millisecond,
		}})
		srv := httptest.NewServer(c)
		t.Cleanup(srv.Close)
		clouds = append(clouds, c)
		urls = append(urls, string(p)+"="+srv.URL)
	}
	env := append(os.Environ(),
		crashEnvDir+"="+dir,
		crashEnvURLs+"="+strings.Join(urls, ","),
		crashEnvNow+"="+crashNow.Format(time.RFC3339Nano),
		crashEnvAnchor+"="+strconv.FormatInt(time.Now().UnixNano(), 10),
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill delays seeded with %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	killed, finished := 0, 0
	phases := map[string]int{} // where the kills hit
	// Kill delays are drawn below maxDelay. Once the work is reported, a run
	// only re-ingests duplicates and ends quickly: whenever a run ends
	// before its kill, the window halves, so that kills keep landing inside
	// the work whatever this machine's speed.
	maxDelay := 200
	for run := 0; ; run++ {
		if run == 300 {
			t.Fatalf("gave up after %d runs (%d killed)", run, killed)
		}
		last := killed >= kills
		c := startChild(t, slices.Concat(env, []string{crashEnvRun + "=" + strconv.Itoa(run)}))
		if last {
			if err := c.wait(30 * time.Second); err != nil {
				t.Fatalf("final run: %v\n%s", err, c.output())
			}
			break
		}
		// Kill it somewhere in its work: up to maxDelay after it opened the
		// ledger, or after it started reporting.
		mark := []string{"ready", "reporting"}[rng.IntN(2)]
		delay := time.Duration(1+rng.IntN(maxDelay)) * time.Millisecond
		ok, err := c.killAfter(mark, delay)
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, c.output())
		}
		if ok {
			// A kill after the child said it was done (while it closes)
			// is harmless but proves little: it does not count.
			ph := c.phase()
			phases[ph]++
			if ph != "done" {
				killed++
			} else {
				maxDelay = max(2, maxDelay/2)
			}
			continue
		}
		if err := c.wait(0); err != nil {
			t.Fatalf("run %d failed before it was killed: %v\n%s", run, err, c.output())
		}
		finished++
		maxDelay = max(2, maxDelay/2)
	}
	t.Logf("%d runs killed in their work (kills by phase: %v), %d finished before their kill, then a final run", killed, phases, finished)

	got := billOf(t, clouds...)
	compareBills(t, got, crashExpected(crashWorkload()))
	var st ledgertest.Stats
	for _, c := range clouds {
		s := c.Bill().Stats
		st.Dropped += s.Dropped
		st.Duplicates += s.Duplicates
		st.Throttled += s.Throttled
		st.Calls += s.Calls
		st.Accepted += s.Accepted
	}
	if st.Dropped == 0 || st.Duplicates == 0 {
		t.Errorf("faults not exercised: %+v", st)
	}
	t.Logf("clouds: %+v", st)

	// The ledger agrees: every bucket is final, reported with the cloud's id.
	store, err := sqlite.Open(t.Context(), filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bs, err := store.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil {
		t.Fatal(err)
	}
	checkAllFinal(t, bs)
	checkRecordIDs(t, bs, clouds...)
	if len(bs) != 120 {
		t.Errorf("%d buckets, want 120", len(bs))
	}
}

// child is one run of TestCrashChild.
type child struct {
	cmd    *exec.Cmd
	out    *markWriter
	stderr bytes.Buffer
	done   chan error // receives Wait's result once
}

func startChild(t *testing.T, env []string) *child {
	t.Helper()
	c := &child{out: newMarkWriter("ready", "reporting"), done: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=60s")
	c.cmd.Env = env
	c.cmd.Stdout = c.out
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The owner of this goroutine is the child itself: it ends when the
	// process does, which wait and killAfter always wait for.
	go func() { c.done <- c.cmd.Wait() }()
	return c
}

// killAfter waits until the child prints mark, then delay, then kills it
// with SIGKILL. It reports false if the child exited first, and an error
// if it printed nothing for a minute.
func (c *child) killAfter(mark string, delay time.Duration) (bool, error) {
	stuck := time.NewTimer(time.Minute)
	defer stuck.Stop()
	select {
	case <-c.out.seen(mark):
	case err := <-c.done:
		c.done <- err
		return false, nil
	case <-stuck.C:
		_ = c.cmd.Process.Kill()
		<-c.done
		return false, fmt.Errorf("child did not say %q in a minute", mark)
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		_ = c.cmd.Process.Kill() // SIGKILL; fails only if it has just exited
		err := <-c.done
		var ee *exec.ExitError
		if errors.As(err, &ee) && !ee.Exited() {
			return true, nil // died of the signal
		}
		c.done <- err
		return false, nil
	case err := <-c.done:
		c.done <- err
		return false, nil
	}
}

// wait waits for the child to exit (killing it after timeout, if above
// zero) and checks that it finished its work.
func (c *child) wait(timeout time.Duration) error {
	var err error
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case err = <-c.done:
		case <-timer.C:
			_ = c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("did not finish in %v", timeout)
		}
	} else {
		err = <-c.done
	}
	if err != nil {
		return err
	}
	if !strings.Contains(c.out.String(), "crash-child: done") {
		return errors.New("exited without finishing (skipped?)")
	}
	return nil
}

// phase says what the child was doing when it last said so.
func (c *child) phase() string {
	out := c.out.String()
	switch {
	case strings.Contains(out, "crash-child: done"):
		return "done"
	case strings.Contains(out, "crash-child: reporting"):
		return "reporting"
	}
	return "ingesting"
}

func (c *child) output() string { return c.out.String() + c.stderr.String() }

// markWriter collects the child's output and closes a channel when the
// child first prints each of the marks it watches for.
type markWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	marks map[string]chan struct{} // closed once the line was printed
}

func newMarkWriter(marks ...string) *markWriter {
	w := &markWriter{marks: make(map[string]chan struct{})}
	for _, m := range marks {
		w.marks[m] = make(chan struct{})
	}
	return w
}

func (w *markWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for m, ch := range w.marks {
		if strings.Contains(w.buf.String(), "crash-child: "+m+"\n") {
			close(ch)
			delete(w.marks, m)
		}
	}
	return len(p), nil
}

// seen returns a channel closed once mark was printed.
func (w *markWriter) seen(mark string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.marks[mark]; ok {
		return ch
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

func (w *markWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestCrashChild is the child of TestCrash; it does nothing unless run by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	fixed, err := time.Parse(time.RFC3339Nano, os.Getenv(crashEnvNow))
	if err != nil {
		t.Fatal(err)
	}
	anchorNS, err := strconv.ParseInt(os.Getenv(crashEnvAnchor), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// The fake clock runs with the wall clock from the parent's start, so
	// that it moves on across runs (leases of a killed run expire).
	anchor := time.Unix(0, anchorNS)
	clock := func() time.Time { return fixed.Add(time.Since(anchor)) }
	run, _ := strconv.Atoi(os.Getenv(crashEnvRun))

	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l := ledger.New(store, ledger.Config{Units: crashUnits, Clock: clock, Logger: discardLogger})
	defer l.Close()
	fmt.Println("crash-child: ready")

	// Ingest the whole workload, every run, in another order each time:
	// what an earlier run committed comes back as duplicates.
	recs := crashWorkload()
	rng := rand.New(rand.NewPCG(uint64(run), 1))
	rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	const workers, batch = 4, 25
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w * batch; i < len(recs); i += workers * batch {
				if _, err := l.Ingest(ctx, recs[i:min(i+batch, len(recs))]); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("crash-child: reporting")

	var reporters []*ledger.Reporter
	for _, pu := range strings.Split(os.Getenv(crashEnvURLs), ",") {
		p, url, _ := strings.Cut(pu, "=")
		target := ledgertest.NewHTTPTarget(url)
		target.Cloud = marketplace.CloudProvider(p)
		target.Limit.MaxItems = 4
		reporters = append(reporters, ledger.NewReporter(l, target, ledger.ReporterConfig{
			Lease: 300 * time.Millisecond, ClaimLimit: 8, SendTimeout: 250 * time.Millisecond,
			BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond, Logger: discardLogger,
		}))
	}
	for {
		for _, r := range reporters {
			if _, err := r.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
		}
		left, err := l.Buckets(ctx, ledger.BucketFilter{States: []ledger.State{ledger.StateOpen, ledger.StateSealed}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond) // leases of a killed run, backoffs
	}
	fmt.Println("crash-child: done")
}
