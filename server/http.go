package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/saasmarket/marketplace/lifecycle"
)

// OpenAPI is the API's OpenAPI 3.1 document, served at /openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	v1 := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.authenticated(h)) }
	v1("POST /v1/usage", s.postUsage)
	v1("GET /v1/usage", s.getUsage)
	v1("GET /v1/entitlements/check", s.checkEntitlement)
	v1("GET /v1/subscriptions", s.listSubscriptions)
	v1("GET /v1/subscriptions/{provider}/{customer}", s.getSubscription)
	v1("PUT /v1/subscriptions/{provider}/{customer}/account", s.putAccount)
	v1("POST /v1/usage/seal", s.postSeal)
	v1("GET /v1/quarantine", s.listQuarantine)
	v1("GET /v1/quarantine/{id}", s.getQuarantined)
	v1("POST /v1/quarantine/{id}/restore", s.restoreQuarantined)
	v1("DELETE /v1/quarantine/{id}", s.discardQuarantined)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(OpenAPI)
	})
	mux.Handle("GET /metrics", s.refreshGauges(promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})))
	mux.HandleFunc("GET /healthz", s.healthz)
	s.dashboardRoutes(mux)
	mux.HandleFunc("GET /readyz", s.readyz)
	// Each cloud authenticates its own endpoints as the cloud requires.
	for _, c := range s.deps.Clouds {
		name := string(c.Name())
		mux.Handle("/"+name+"/landing", c.LandingHandler())
		mux.Handle("/"+name+"/notifications", c.NotificationHandler())
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path)
	})
	return s.observe(mux)
}

// apiKeys compares a presented key with every configured key in constant
// time. Comparing SHA-256 digests makes each comparison the same length, so
// neither a key's content nor its length shows in the timing.
type apiKeys [][sha256.Size]byte

func newAPIKeys(keys []string) apiKeys {
	ks := make(apiKeys, len(keys))
	for i, k := range keys {
		ks[i] = sha256.Sum256([]byte(k))
	}
	return ks
}

func (ks apiKeys) valid(key string) bool {
	d := sha256.Sum256([]byte(key))
	ok := 0
	for i := range ks {
		ok |= subtle.ConstantTimeCompare(d[:], ks[i][:]) // no early exit: every key is compared
	}
	return ok == 1 && key != ""
}

func (s *Server) authenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !s.keys.valid(key) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="marketplaced"`)
			writeError(w, r, http.StatusUnauthorized, "unauthorized", "a valid API key is required: Authorization: Bearer KEY")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// requestIDs makes request ids: a random prefix per process and a counter,
// unique without a random read per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() requestIDs {
	var b [6]byte
	rand.Read(b[:])
	return requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (g *requestIDs) next() string {
	return g.prefix + strconv.FormatUint(g.n.Add(1), 36)
}

type requestIDKey struct{}

// RequestID returns the request id of a request served by the server.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// usableRequestID accepts a caller's X-Request-Id if it is short and plain,
// so that ids can be followed across services without polluting logs.
func usableRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe gives every request an id (X-Request-Id), times it per route for
// /metrics and logs it: errors always, successes at debug level.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !usableRequestID(id) {
			id = s.reqIDs.next()
		}
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		d := time.Since(start)
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		s.metrics.observe(route, r.Method, sw.code, d)
		level := slog.LevelDebug
		switch {
		case sw.code >= 500:
			level = slog.LevelError
		case sw.code >= 400:
			level = slog.LevelInfo
		}
		if s.log.Enabled(r.Context(), level) {
			s.log.LogAttrs(r.Context(), level, "request", slog.String("request_id", id), slog.String("method", r.Method),
				slog.String("route", route), slog.Int("status", sw.code), slog.Duration("duration", d),
				slog.String("remote", r.RemoteAddr))
		}
	})
}

// apiError is the body of every error response.
type apiError struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
	// Record and Field name the offending record of a usage batch.
	Record *int   `json:"record,omitempty"`
	Field  string `json:"field,omitempty"`
}

// requireJSON answers 415 and returns false unless the request says its
// body is JSON.
func requireJSON(w http.ResponseWriter, r *http.Request) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return false
	}
	return true
}

// decodeJSON decodes the request's body, at most limit bytes, into v,
// refusing members v does not have (encoding/json/v2: about five times
// faster than v1 on a batch of usage records, most of an ingest's CPU).
// When it cannot, it answers with refuseBody and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, shape string) bool {
	err := jsonv2.UnmarshalRead(http.MaxBytesReader(w, r.Body, limit), v, jsonv2.RejectUnknownMembers(true))
	if err != nil {
		refuseBody(w, r, err, limit, shape)
		return false
	}
	return true
}

// refuseBody answers a body that could not be read or decoded: 413
// body_too_large naming the limit when it was over it, otherwise 400
// invalid_json saying what shape the body should have.
func refuseBody(w http.ResponseWriter, r *http.Request, err error, limit int64, shape string) {
	if lifecycle.BodyStatus(err) == http.StatusRequestEntityTooLarge {
		writeError(w, r, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the body is larger than %d bytes", limit))
		return
	}
	writeError(w, r, http.StatusBadRequest, "invalid_json", "the body is not "+shape+": "+err.Error())
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	writeErrorBody(w, r, status, errorBody{Code: code, Message: msg})
}

func writeErrorBody(w http.ResponseWriter, r *http.Request, status int, e errorBody) {
	e.RequestID = RequestID(r.Context())
	writeJSON(w, status, apiError{e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"code":"internal","message":"encoding the response failed"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is ready when the store answers, every reporter and loop is running
// and the server is not stopping.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	type check struct {
		Status  string `json:"status"`
		Store   string `json:"store"`
		Workers string `json:"workers"`
	}
	c := check{Status: "ok", Store: "ok"}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.deps.Ledger.Store().Backlog(ctx); err != nil {
		c.Status, c.Store = "unavailable", err.Error()
	}
	running, want := s.running.Load(), s.expected
	c.Workers = strconv.Itoa(int(running)) + "/" + strconv.Itoa(int(want)) + " running"
	if want == 0 || running < want {
		c.Status = "unavailable"
	}
	if s.draining.Load() {
		c.Status = "stopping"
	}
	code := http.StatusOK
	if c.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, c)
}

// refreshGauges counts the parked notifications of every mounted cloud
// and the quarantined rows before a scrape: a few queries per scrape, not
// a loop of their own.
func (s *Server) refreshGauges(next http.Handler) http.Handler {
	if s.deps.Parked == nil && s.deps.Quarantine == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if s.deps.Parked != nil {
			for _, c := range s.deps.Clouds {
				n, err := s.deps.Parked(ctx, c.Name())
				if err != nil {
					s.log.Warn("counting parked notifications", "provider", string(c.Name()), "err", err)
					continue
				}
				s.metrics.Parked(c.Name(), n)
			}
		}
		s.refreshQuarantined(ctx)
		next.ServeHTTP(w, r)
	})
}
