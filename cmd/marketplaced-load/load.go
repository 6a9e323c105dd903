package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options of a load run.
type Options struct {
	URL, APIKey string
	Duration    time.Duration
	Concurrency int
	Batch       int  // ingest: records per request
	NoEventIDs  bool // ingest
	BatchKeys   bool // ingest: send each batch under an Idempotency-Key (with NoEventIDs: the batch, not each record, is idempotent)
	Customers   int
	Provider    string
	Metric      string
}

// Result of a load run.
type Result struct {
	Mode     string
	Requests int64
	Records  int64 // ingest: records acknowledged
	Errors   int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	// CPUShare is the generator's CPU time over the run's wall time times
	// the machine's cores: the part of the machine it used.
	CPUShare float64
}

func (r Result) String() string {
	rate := fmt.Sprintf("%.0f requests/s", float64(r.Requests)/r.Elapsed.Seconds())
	if r.Mode == "ingest" {
		rate = fmt.Sprintf("%.0f records/s (%s)", float64(r.Records)/r.Elapsed.Seconds(), rate)
	}
	return fmt.Sprintf("%s: %s over %v, %d errors, p50 %v, p99 %v, load generator CPU %.0f%% of %d cores",
		r.Mode, rate, r.Elapsed.Round(time.Millisecond), r.Errors, r.P50, r.P99, 100*r.CPUShare, runtime.NumCPU())
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (o *Options) defaults(conc int) {
	if o.Concurrency <= 0 {
		o.Concurrency = conc
	}
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	if o.Customers <= 0 {
		o.Customers = 1000
	}
	if o.Provider == "" {
		o.Provider = "aws"
	}
	if o.Metric == "" {
		o.Metric = "tokens"
	}
}

func client(conc int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conc, MaxIdleConnsPerHost: conc, IdleConnTimeout: time.Minute, DisableCompression: true,
	}}
}

// drive runs conc workers calling one until the duration is over, and
// gathers their latencies.
func drive(ctx context.Context, o Options, mode string, one func(ctx context.Context, w int, buf *bytes.Buffer) (records int, err error)) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var (
		requests, records, errs atomic.Int64
		firstErr                atomic.Value
		mu                      sync.Mutex
		lat                     []time.Duration
		wg                      sync.WaitGroup
	)
	cpu0, start := cpuTime(), time.Now()
	for w := range o.Concurrency {
		wg.Go(func() {
			var mine []time.Duration
			var buf bytes.Buffer
			for ctx.Err() == nil {
				t := time.Now()
				n, err := one(ctx, w, &buf)
				if ctx.Err() != nil {
					break // cut off by the end of the run: not counted
				}
				mine = append(mine, time.Since(t))
				requests.Add(1)
				records.Add(int64(n))
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := Result{Mode: mode, Requests: requests.Load(), Records: records.Load(), Errors: errs.Load(), Elapsed: elapsed,
		CPUShare: float64(cpuTime()-cpu0) / float64(elapsed) / float64(runtime.NumCPU())}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	if e, ok := firstErr.Load().(error); ok && res.Errors*100 > res.Requests { // more than 1% failed
		return res, fmt.Errorf("%d of %d requests failed; first: %w", res.Errors, res.Requests, e)
	}
	return res, nil
}

// Ingest posts batches of o.Batch records to POST /v1/usage. Each record has
// a unique event id (unless NoEventIDs), customers and quantities vary, and
// the time is left out (now).
func Ingest(ctx context.Context, o Options) (Result, error) {
	o.defaults(8)
	c := client(o.Concurrency)
	var seq atomic.Int64
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	return drive(ctx, o, "ingest", func(ctx context.Context, w int, buf *bytes.Buffer) (int, error) {
		buf.Reset()
		first := seq.Add(int64(o.Batch)) - int64(o.Batch)
		b := buf.AvailableBuffer()
		b = append(b, `{"records":[`...)
		for i := range o.Batch {
			n := first + int64(i)
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			if !o.NoEventIDs {
				b = append(b, `"event_id":"`...)
				b = append(b, run...)
				b = append(b, '-')
				b = strconv.AppendInt(b, n, 36)
				b = append(b, `",`...)
			}
			b = append(b, `"provider":"`...)
			b = append(b, o.Provider...)
			b = append(b, `","customer":"cust-`...)
			b = strconv.AppendInt(b, n%int64(o.Customers), 10)
			b = append(b, `","metric":"`...)
			b = append(b, o.Metric...)
			b = append(b, `","quantity":`...)
			b = strconv.AppendInt(b, 1+n%977, 10)
			b = append(b, '}')
		}
		b = append(b, `]}`...)
		req, err := http.NewRequestWithContext(ctx, "POST", o.URL+"/v1/usage", bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
		req.Header.Set("Content-Type", "application/json")
		if o.BatchKeys {
			req.Header.Set("Idempotency-Key", run+"-"+strconv.FormatInt(first, 36))
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("POST /v1/usage: %d %s", resp.StatusCode, body)
		}
		if !bytes.Contains(body, []byte(`"accepted":`+strconv.Itoa(o.Batch)+`,`)) {
			return 0, fmt.Errorf("POST /v1/usage: not all accepted: %s", body)
		}
		return o.Batch, nil
	})
}

// Check asks GET /v1/entitlements/check for customers cust-0 … in turn and
// expects each to be entitled (the caller subscribes them first).
func Check(ctx context.Context, o Options) (Result, error) {
	o.defaults(32)
	c := client(o.Concurrency)
	urls := make([]string, o.Customers)
	for i := range urls {
		urls[i] = o.URL + "/v1/entitlements/check?provider=" + o.Provider + "&customer=cust-" + strconv.Itoa(i)
	}
	auth := []string{"Bearer " + o.APIKey}
	var next atomic.Int64
	want := []byte(`{"entitled":true}`)
	return drive(ctx, o, "check", func(ctx context.Context, w int, buf *bytes.Buffer) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", urls[next.Add(1)%int64(len(urls))], nil)
		if err != nil {
			return 0, err
		}
		req.Header["Authorization"] = auth
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		buf.Reset()
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(buf.Bytes(), want) {
			return 0, errors.New("GET /v1/entitlements/check: " + strconv.Itoa(resp.StatusCode) + " " + buf.String())
		}
		return 0, nil
	})
}
