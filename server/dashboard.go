package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// The dashboard is a page for the seller (not the buyer): subscriptions per
// cloud and state, usage per hour as a chart, the reporters' health, the
// parked notifications and the quarantined rows. Its script fetches
// /dashboard/data and redraws in place; everything it loads is embedded (no
// outside CDN).
//
// It is behind a sign-in: one of the API keys, or the dashboard password
// when the seller set one (-dashboard-password). A sign-in sets a session
// cookie signed with a key made at start, so a restart signs everyone out.
// /dashboard/data also takes the API key as a bearer token, for scripts.

//go:embed dashboard
var dashboardFiles embed.FS

const (
	sessionCookie = "marketplaced_dashboard"
	sessionTTL    = 12 * time.Hour
	// dashboardCacheFor bounds the store queries of several open
	// dashboards to one set per interval.
	dashboardCacheFor = 2 * time.Second
	// usageHours is how many hours the usage chart shows.
	usageHours = 24
	// problemLimit bounds the retried, rejected and conflict buckets read
	// (and the rejected and conflict listed) per cloud: the newest of
	// them, so that a refresh reads a bounded number of buckets however
	// many retention keeps.
	problemLimit = 50
)

// dashboardSecurity keeps the dashboard's pages to their own origin.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// notificationLister is the part of the store the parked list needs
// (marketplace.NotificationInbox has it).
type notificationLister interface {
	ListNotifications(ctx context.Context, p marketplace.CloudProvider, state string, limit int) ([]marketplace.Notification, error)
}

type dashboard struct {
	s          *Server
	macKey     []byte
	loginPage  *template.Template
	mu         sync.Mutex
	cached     *dashboardData
	cachedWhen time.Time
}

func newDashboard(s *Server) *dashboard {
	key := make([]byte, 32)
	rand.Read(key)
	return &dashboard{s: s, macKey: key,
		loginPage: template.Must(template.ParseFS(dashboardFiles, "dashboard/login.html"))}
}

// dashboardRoutes mounts the dashboard on mux.
func (s *Server) dashboardRoutes(mux *http.ServeMux) {
	d := newDashboard(s)
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /dashboard/{$}", d.index)
	mux.HandleFunc("POST /dashboard/login", d.login)
	mux.HandleFunc("POST /dashboard/logout", d.logout)
	mux.HandleFunc("GET /dashboard/data", d.data)
	mux.HandleFunc("GET /dashboard/assets/{name}", d.asset)
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (d *dashboard) index(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	if !d.signedIn(r) {
		d.showLogin(w, http.StatusOK, "")
		return
	}
	b, err := dashboardFiles.ReadFile("dashboard/index.html")
	if err != nil {
		http.Error(w, "dashboard missing from the build", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}

func (d *dashboard) showLogin(w http.ResponseWriter, status int, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	d.loginPage.Execute(w, struct {
		Problem     string
		HasPassword bool
	}{problem, d.s.cfg.DashboardPassword != ""})
}

func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	secret := r.PostFormValue("secret")
	if !d.validSecret(secret) {
		d.s.log.Info("dashboard sign-in refused", "request_id", RequestID(r.Context()), "remote", r.RemoteAddr)
		d.showLogin(w, http.StatusUnauthorized, "That key or password is not right. Check it and try again.")
		return
	}
	exp := d.s.now().Add(sessionTTL)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: d.session(exp), Path: "/dashboard",
		Expires: exp, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
}

func (d *dashboard) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/dashboard", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/dashboard/", http.StatusSeeOther)
}

// validSecret accepts an API key or the dashboard password, in constant time.
func (d *dashboard) validSecret(secret string) bool {
	ok := d.s.keys.valid(secret)
	if pw := d.s.cfg.DashboardPassword; pw != "" {
		a, b := sha256.Sum256([]byte(secret)), sha256.Sum256([]byte(pw))
		ok = subtle.ConstantTimeCompare(a[:], b[:]) == 1 || ok
	}
	return ok
}

// session is a cookie value: its expiry and a MAC of it.
func (d *dashboard) session(exp time.Time) string {
	ts := strconv.FormatInt(exp.Unix(), 10)
	return ts + "." + d.mac(ts)
}

func (d *dashboard) mac(ts string) string {
	m := hmac.New(sha256.New, d.macKey)
	m.Write([]byte("dashboard session|" + ts))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (d *dashboard) signedIn(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	ts, sig, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(d.mac(ts))) {
		return false
	}
	exp, err := strconv.ParseInt(ts, 10, 64)
	return err == nil && d.s.now().Unix() < exp
}

func (d *dashboard) asset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
	ct := types[path.Ext(name)]
	b, err := dashboardFiles.ReadFile("dashboard/" + name)
	if ct == "" || err != nil {
		http.NotFound(w, r)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// dashboardData is GET /dashboard/data.
type dashboardData struct {
	Generated time.Time                   `json:"generated"`
	Providers []marketplace.CloudProvider `json:"providers"`
	// Subscriptions counts subscriptions per cloud and state.
	Subscriptions map[marketplace.CloudProvider]map[string]int `json:"subscriptions"`
	// Linked counts the subscriptions per cloud that are linked to an
	// account of the seller's (the landing's link hook, or
	// PUT /v1/subscriptions/{provider}/{customer}/account).
	Linked map[marketplace.CloudProvider]int `json:"linked"`
	// Hours are the starts of the hours the usage chart shows, oldest first.
	Hours  []time.Time    `json:"hours"`
	Usage  []usageSeries  `json:"usage"`
	Health []reportHealth `json:"reporter"`
	Parked []parkedNote   `json:"parked"`
	// Quarantined are the rows the store could not read and moved aside
	// (at most quarantineListLimit, oldest first), without their data;
	// QuarantinedCount counts them all per source.
	Quarantined      []quarantined    `json:"quarantined"`
	QuarantinedCount map[string]int64 `json:"quarantined_count"`
}

// usageSeries is the raw usage of one cloud dimension per hour of Hours.
type usageSeries struct {
	Provider  marketplace.CloudProvider `json:"provider"`
	Dimension string                    `json:"dimension"`
	Quantity  []int64                   `json:"quantity"`
}

// reportHealth is one cloud reporter's state.
type reportHealth struct {
	Provider marketplace.CloudProvider `json:"provider"`
	// Pending is the sealed buckets waiting to be reported (the store's
	// Backlog, exact); Retried those of them that failed at least once.
	Pending int `json:"pending"`
	Retried int `json:"retried"`
	// OldestUnreported is the hour of the oldest pending bucket.
	OldestUnreported *time.Time `json:"oldest_unreported,omitempty"`
	// Reported counts the reported buckets of the usage chart's hours
	// (Hours), not of all time.
	Reported int `json:"reported"`
	// RejectedCount and ConflictCount count the buckets in those states,
	// and Rejected and Conflict list them, newest hour first.
	RejectedCount int            `json:"rejected_count"`
	ConflictCount int            `json:"conflict_count"`
	Rejected      []problemEntry `json:"rejected"`
	Conflict      []problemEntry `json:"conflict"`
	// Retried, RejectedCount and ConflictCount stop at ProblemLimit: the
	// dashboard reads only the newest ProblemLimit buckets of each. The
	// Capped flags say that there are more than the count.
	ProblemLimit   int  `json:"problem_limit"`
	RetriedCapped  bool `json:"retried_capped"`
	RejectedCapped bool `json:"rejected_capped"`
	ConflictCapped bool `json:"conflict_capped"`
}

// problemEntry is a bucket the cloud refused, with the cloud's reason.
type problemEntry struct {
	Customer  string    `json:"customer"`
	Dimension string    `json:"dimension"`
	Hour      time.Time `json:"hour"`
	Units     int64     `json:"units"`
	Attempts  int       `json:"attempts"`
	Reason    string    `json:"reason"`
}

type parkedNote struct {
	Provider marketplace.CloudProvider `json:"provider"`
	ID       string                    `json:"id"`
	Kind     string                    `json:"kind"`
	Subject  string                    `json:"subject"`
	Attempts int                       `json:"attempts"`
	Reason   string                    `json:"reason"`
	Received time.Time                 `json:"received"`
}

func (d *dashboard) data(w http.ResponseWriter, r *http.Request) {
	key, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !(bearer && d.s.keys.valid(key)) && !d.signedIn(r) {
		writeError(w, r, http.StatusUnauthorized, "unauthorized", "sign in at /dashboard/ or send an API key: Authorization: Bearer KEY")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	dd, err := d.load(r.Context())
	if err != nil {
		d.s.unavailable(w, r, "reading the dashboard's data", err)
		return
	}
	writeJSON(w, http.StatusOK, dd)
}

// load returns the dashboard's data, at most dashboardCacheFor old.
func (d *dashboard) load(ctx context.Context) (*dashboardData, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.s.now()
	if d.cached != nil && now.Sub(d.cachedWhen) < dashboardCacheFor && !now.Before(d.cachedWhen) {
		return d.cached, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dd, err := d.compute(ctx, now)
	if err != nil {
		return nil, err
	}
	d.cached, d.cachedWhen = dd, now
	return dd, nil
}

func (d *dashboard) compute(ctx context.Context, now time.Time) (*dashboardData, error) {
	s := d.s
	var providers []marketplace.CloudProvider
	for _, p := range marketplace.Providers() {
		if s.providers[p] {
			providers = append(providers, p)
		}
	}
	dd := &dashboardData{Generated: now.UTC(), Providers: providers,
		Subscriptions: map[marketplace.CloudProvider]map[string]int{}, Linked: map[marketplace.CloudProvider]int{},
		Usage: []usageSeries{}, Health: []reportHealth{}, Parked: []parkedNote{},
		Quarantined: []quarantined{}, QuarantinedCount: map[string]int64{}}
	first := ledger.HourOf(now).Add(-(usageHours - 1) * time.Hour)
	for i := range usageHours {
		dd.Hours = append(dd.Hours, first.Add(time.Duration(i)*time.Hour).UTC())
	}
	// Usage committed but not yet folded shows at once.
	if err := s.deps.Ledger.Fold(ctx); err != nil {
		return nil, err
	}
	bls, err := s.deps.Ledger.Store().Backlog(ctx)
	if err != nil {
		return nil, err
	}
	backlog := map[marketplace.CloudProvider]ledger.Backlog{}
	for _, bl := range bls {
		backlog[bl.Provider] = bl
	}
	for _, p := range providers {
		// Counted and summed by the store: a refresh costs the same
		// answer with 10 buyers or 100,000.
		counts, err := s.deps.Subscriptions.CountSubscriptions(ctx, p)
		if err != nil {
			return nil, err
		}
		dd.Subscriptions[p] = counts.ByStatus
		dd.Linked[p] = counts.Linked

		// Only the chart's hours, whatever retention keeps.
		sums, err := s.deps.Ledger.Store().SumBuckets(ctx, ledger.BucketFilter{Provider: p, From: first, Before: first.Add(usageHours * time.Hour)})
		if err != nil {
			return nil, err
		}
		h := reportHealth{Provider: p, ProblemLimit: problemLimit}
		if bl, ok := backlog[p]; ok && bl.Sealed > 0 {
			h.Pending = int(bl.Sealed)
			t := bl.OldestHour.UTC()
			h.OldestUnreported = &t
		}
		series := map[string][]int64{}
		for _, b := range sums {
			if i := int(b.Hour.Sub(first) / time.Hour); !b.Hour.Before(first) && i < usageHours {
				q := series[b.Dimension]
				if q == nil {
					q = make([]int64, usageHours)
					series[b.Dimension] = q
				}
				q[i] += b.Quantity
			}
			if b.State == ledger.StateReported {
				h.Reported += int(b.Buckets)
			}
		}
		retried, more, err := d.newest(ctx, ledger.BucketFilter{Provider: p, States: []ledger.State{ledger.StateSealed}, MinAttempts: 1})
		if err != nil {
			return nil, err
		}
		h.Retried, h.RetriedCapped = len(retried), more
		if h.Rejected, h.RejectedCapped, err = d.newest(ctx, ledger.BucketFilter{Provider: p, States: []ledger.State{ledger.StateRejected}}); err != nil {
			return nil, err
		}
		if h.Conflict, h.ConflictCapped, err = d.newest(ctx, ledger.BucketFilter{Provider: p, States: []ledger.State{ledger.StateConflict}}); err != nil {
			return nil, err
		}
		h.RejectedCount, h.ConflictCount = len(h.Rejected), len(h.Conflict)
		dims := make([]string, 0, len(series))
		for dim := range series {
			dims = append(dims, dim)
		}
		slices.Sort(dims)
		for _, dim := range dims {
			dd.Usage = append(dd.Usage, usageSeries{Provider: p, Dimension: dim, Quantity: series[dim]})
		}
		dd.Health = append(dd.Health, h)
	}
	if nl, ok := s.deps.Subscriptions.(notificationLister); ok {
		ns, err := nl.ListNotifications(ctx, "", marketplace.NotificationParked, 200)
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			dd.Parked = append(dd.Parked, parkedNote{Provider: n.Provider, ID: n.ID, Kind: n.Kind, Subject: n.Subject,
				Attempts: n.Attempts, Reason: n.Reason, Received: n.Received.UTC()})
		}
	}
	if qs := s.deps.Quarantine; qs != nil {
		rows, err := qs.ListQuarantined(ctx, quarantineListLimit)
		if err != nil {
			return nil, err
		}
		for i := range rows {
			dd.Quarantined = append(dd.Quarantined, ViewQuarantined(&rows[i], false))
		}
		if dd.QuarantinedCount, err = quarantineCounts(ctx, qs); err != nil {
			return nil, err
		}
	}
	return dd, nil
}

// newest returns the newest problemLimit buckets that f selects, newest
// hour first, and whether there are more.
func (d *dashboard) newest(ctx context.Context, f ledger.BucketFilter) ([]problemEntry, bool, error) {
	f.NewestFirst, f.Limit = true, problemLimit+1
	bs, err := d.s.deps.Ledger.Buckets(ctx, f)
	if err != nil {
		return nil, false, err
	}
	more := len(bs) > problemLimit
	if more {
		bs = bs[:problemLimit]
	}
	out := make([]problemEntry, 0, len(bs))
	for _, b := range bs {
		out = append(out, problemEntry{Customer: b.Customer, Dimension: b.Dimension, Hour: b.Hour.UTC(), Units: b.Units, Attempts: b.Attempts, Reason: b.Reason})
	}
	return out, more, nil
}
