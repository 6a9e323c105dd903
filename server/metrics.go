package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// Metrics is the daemon's Prometheus registry: the ledger's and reporters'
// counts (it is a ledger.Metrics), HTTP latency per route, and what the
// health checks see.
type Metrics struct {
	Registry *prometheus.Registry

	recorded, late, sealed, reported, rejected, conflict, retried, missed *prometheus.CounterVec
	duplicates                                                            prometheus.Counter
	oldest                                                                *prometheus.GaugeVec
	parked                                                                *prometheus.GaugeVec
	quarantined                                                           *prometheus.GaugeVec
	http                                                                  *prometheus.HistogramVec
}

var _ ledger.Metrics = (*Metrics)(nil)

// NewMetrics returns metrics on a registry of their own (with the Go and
// process collectors), so tests and several servers in one process never
// share counters.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	counter := func(name, help string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "marketplaced", Name: name, Help: help}, []string{"provider"})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		Registry: reg,
		recorded: counter("usage_recorded_total", "Usage records counted by the ledger."),
		late:     counter("usage_late_quantity_total", "Raw usage that arrived after its hour was sealed (moved to a later hour)."),
		sealed:   counter("buckets_sealed_total", "Hourly buckets sealed."),
		reported: counter("buckets_reported_total", "Buckets the cloud accepted."),
		rejected: counter("buckets_rejected_total", "Buckets the cloud refused for good."),
		conflict: counter("buckets_conflict_total", "Buckets for which the cloud holds another quantity."),
		retried:  counter("buckets_retried_total", "Report attempts to be retried."),
		missed:   counter("buckets_missed_total", "Buckets that missed their cloud's deadline (carried or expired): an alert."),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "marketplaced", Name: "usage_duplicates_total",
			Help: "Usage records skipped because their event id was already counted."}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "marketplaced", Name: "oldest_unreported_bucket_age_seconds",
			Help: "Age of the oldest sealed bucket not yet reported."}, []string{"provider"}),
		parked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "marketplaced", Name: "notifications_parked",
			Help: "Lifecycle notifications that could not be applied and wait for an operator."}, []string{"provider"}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "marketplaced", Name: "quarantined_rows",
			Help: "Stored rows the store could not read and moved aside (usage_log: append-log entries, inbox: notifications); they wait for an operator (marketplaced quarantine)."},
			[]string{"source"}),
		http: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "marketplaced", Name: "http_request_duration_seconds",
			Help:    "HTTP request latency per route.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"route", "method", "code"}),
	}
	reg.MustRegister(m.duplicates, m.oldest, m.parked, m.quarantined, m.http,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every cloud's series exist from the start, so a dashboard shows 0
	// rather than nothing.
	for _, p := range marketplace.Providers() {
		for _, c := range []*prometheus.CounterVec{m.recorded, m.late, m.sealed, m.reported, m.rejected, m.conflict, m.retried, m.missed} {
			c.WithLabelValues(string(p))
		}
	}
	for _, src := range quarantineSources {
		m.quarantined.WithLabelValues(src)
	}
	return m
}

func (m *Metrics) Recorded(p marketplace.CloudProvider, n int64) { add(m.recorded, p, n) }
func (m *Metrics) Duplicates(n int64)                            { m.duplicates.Add(float64(n)) }
func (m *Metrics) Late(p marketplace.CloudProvider, q int64)     { add(m.late, p, q) }
func (m *Metrics) Sealed(p marketplace.CloudProvider, n int64)   { add(m.sealed, p, n) }
func (m *Metrics) Reported(p marketplace.CloudProvider, n int64) { add(m.reported, p, n) }
func (m *Metrics) Rejected(p marketplace.CloudProvider, n int64) { add(m.rejected, p, n) }
func (m *Metrics) Conflict(p marketplace.CloudProvider, n int64) { add(m.conflict, p, n) }
func (m *Metrics) Retried(p marketplace.CloudProvider, n int64)  { add(m.retried, p, n) }
func (m *Metrics) Missed(p marketplace.CloudProvider, n int64)   { add(m.missed, p, n) }

// OldestUnreported implements ledger.Metrics.
func (m *Metrics) OldestUnreported(p marketplace.CloudProvider, age time.Duration) {
	m.oldest.WithLabelValues(string(p)).Set(age.Seconds())
}

// Parked sets the number of parked notifications of a cloud.
func (m *Metrics) Parked(p marketplace.CloudProvider, n int) {
	m.parked.WithLabelValues(string(p)).Set(float64(n))
}

// Quarantined sets the number of quarantined rows of a source.
func (m *Metrics) Quarantined(source string, n int64) {
	m.quarantined.WithLabelValues(source).Set(float64(n))
}

func add(c *prometheus.CounterVec, p marketplace.CloudProvider, n int64) {
	c.WithLabelValues(string(p)).Add(float64(n))
}

func (m *Metrics) observe(route, method string, code int, d time.Duration) {
	m.http.WithLabelValues(route, method, statusText(code)).Observe(d.Seconds())
}

// statusText avoids an allocation per request for the common codes.
func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 401:
		return "401"
	case 404:
		return "404"
	case 429:
		return "429"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}
