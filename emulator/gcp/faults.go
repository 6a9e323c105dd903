package gcp

import (
	"bytes"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Faults are the failures the emulator injects into the Google API routes
// (/v1/...). Probabilities are per request, drawn from the seeded source.
type Faults struct {
	// Throttle is the probability that a request is refused before it is
	// applied with HTTP 429 RESOURCE_EXHAUSTED and a Retry-After header.
	Throttle float64
	// ThrottleTPS refuses requests above this rate per second the same
	// way; zero: no limit.
	ThrottleTPS float64
	// RetryAfter is the Retry-After sent with a throttled request; default 1 s.
	RetryAfter time.Duration
	// ErrorRate is the probability that a request is refused before it is
	// applied with HTTP 503 UNAVAILABLE.
	ErrorRate float64
	// Latency delays every request before it is applied.
	Latency time.Duration
	// DropResponse is the probability that a request is applied and its
	// response then lost: the connection closes without an answer.
	DropResponse float64
	// Scope limits the faults to one API: "servicecontrol", "procurement",
	// or "" for both.
	Scope string
}

// SetFaults replaces the faults injected from now on.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = f
	e.limiter = nil
	if f.ThrottleTPS > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(f.ThrottleTPS), max(1, int(math.Ceil(f.ThrottleTPS))))
	}
}

type faultPlan struct {
	latency  time.Duration
	throttle bool
	retry    time.Duration
	fail     bool
	drop     bool
}

func (e *Emulator) plan(path string) faultPlan {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.faults
	switch f.Scope {
	case "servicecontrol":
		if !strings.HasPrefix(path, "/v1/services/") {
			return faultPlan{}
		}
	case "procurement":
		if !strings.HasPrefix(path, "/v1/providers/") {
			return faultPlan{}
		}
	}
	p := faultPlan{latency: f.Latency, retry: f.RetryAfter}
	if p.retry <= 0 {
		p.retry = time.Second
	}
	// Draw every probability each time, so a run's sequence does not
	// depend on which faults are switched on.
	t, r, d := e.rng.Float64(), e.rng.Float64(), e.rng.Float64()
	p.throttle = t < f.Throttle || e.limiter != nil && !e.limiter.Allow()
	p.fail = r < f.ErrorRate
	p.drop = d < f.DropResponse
	return p
}

// withFaults wraps an API handler with the configured faults.
func (e *Emulator) withFaults(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := e.plan(r.URL.Path)
		if p.latency > 0 {
			select {
			case <-time.After(p.latency):
			case <-r.Context().Done():
				return
			}
		}
		switch {
		case p.throttle:
			w.Header().Set("Retry-After", strconv.Itoa(int((p.retry+time.Second-1)/time.Second)))
			writeError(w, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "emulated quota exceeded; retry later")
			return
		case p.fail:
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "emulated outage; the request was not applied")
			return
		case p.drop:
			h.ServeHTTP(&discardWriter{h: http.Header{}}, r)
			hj, ok := w.(http.Hijacker)
			if !ok {
				writeError(w, http.StatusInternalServerError, "INTERNAL", "emulated lost response")
				return
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		h.ServeHTTP(w, r)
	})
}

// discardWriter takes a response that the fault then loses.
type discardWriter struct {
	h   http.Header
	buf bytes.Buffer
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return d.buf.Write(b) }
func (d *discardWriter) WriteHeader(int)             {}
