package keyset

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	testKeysOnce sync.Once
	testKeys     []*rsa.PrivateKey
)

// rsaKey returns the i-th of three test keys (generated once: 2048-bit
// generation is slow).
func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	testKeysOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testKeys = append(testKeys, k)
		}
	})
	return testKeys[i]
}

// jwksOf renders the public halves of keys as a JWKS, by kid.
func jwksOf(t testing.TB, kids ...string) []byte {
	type jwkOut struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		N   string `json:"n"`
		E   string `json:"e"`
	}
	var set struct {
		Keys []jwkOut `json:"keys"`
	}
	for _, kid := range kids {
		pub := rsaKey(t, int(kid[0]-'A')%3).PublicKey
		set.Keys = append(set.Keys, jwkOut{"RSA", kid, "sig",
			base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyServer serves a key document that the test changes as it goes.
type keyServer struct {
	*httptest.Server
	mu       sync.Mutex
	body     []byte
	status   int
	header   http.Header
	block    chan struct{} // when set, requests wait for it to close
	requests atomic.Int64
	arrived  chan struct{} // receives once per request, if set
}

func newKeyServer(t *testing.T, body []byte, cacheControl string) *keyServer {
	s := &keyServer{body: body, status: http.StatusOK, header: http.Header{}}
	if cacheControl != "" {
		s.header.Set("Cache-Control", cacheControl)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		block, arrived, body, status := s.block, s.arrived, s.body, s.status
		for k, v := range s.header {
			w.Header()[k] = v
		}
		s.mu.Unlock()
		if arrived != nil {
			arrived <- struct{}{}
		}
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *keyServer) set(f func(s *keyServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// clock is the injected clock: it moves only when a test advances it.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newTestCache(cfg Config) (*Cache[crypto.PublicKey], *clock) {
	clk := &clock{}
	clk.ns.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	cfg.Clock = clk.Now
	return New(JWKS, cfg), clk
}

func wantKey(t *testing.T, c *Cache[crypto.PublicKey], url, kid string) {
	t.Helper()
	k, err := c.Key(t.Context(), url, kid)
	if err != nil {
		t.Fatalf("Key(%s): %v", kid, err)
	}
	if !rsaKey(t, int(kid[0]-'A')%3).PublicKey.Equal(k) {
		t.Fatalf("Key(%s) is another key", kid)
	}
}

func wantRequests(t *testing.T, s *keyServer, n int64) {
	t.Helper()
	if got := s.requests.Load(); got != n {
		t.Fatalf("%d fetches, want %d", got, n)
	}
}

// TestTTL: a document is trusted exactly for its max-age (less Age, within
// MinTTL and MaxTTL): just before, a key is served although the publisher
// is down; just after, it is not.
func TestTTL(t *testing.T) {
	tests := []struct {
		name, cacheControl, age string
		want                    time.Duration
	}{
		{"max-age", "public, max-age=120, must-revalidate", "", 120 * time.Second},
		{"max-age less Age", "max-age=300", "60", 240 * time.Second},
		{"no header: DefaultTTL", "", "", time.Hour},
		{"no-store: MinTTL", "no-store", "", time.Minute},
		{"below MinTTL", "max-age=5", "", time.Minute},
		{"above MaxTTL", "max-age=9999999", "", 24 * time.Hour},
		{"malformed: stale", "max-age=soon", "", time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newKeyServer(t, jwksOf(t, "A"), tc.cacheControl)
			if tc.age != "" {
				s.header.Set("Age", tc.age)
			}
			c, clk := newTestCache(Config{})
			wantKey(t, c, s.URL, "A")
			s.set(func(s *keyServer) { s.status = http.StatusServiceUnavailable })
			clk.Advance(tc.want - time.Second)
			wantKey(t, c, s.URL, "A") // an early refresh fails; the key is still good
			wantRequests(t, s, 2)
			clk.Advance(2 * time.Second)
			_, err := c.Key(t.Context(), s.URL, "A")
			var fe *FetchError
			if !errors.As(err, &fe) || fe.StatusCode != http.StatusServiceUnavailable || !fe.Temporary() {
				t.Fatalf("after max-age with the publisher down: %v, want the fetch error", err)
			}
		})
	}
}

// TestWithdrawnKey: a key dropped from the document is served until the
// cached set expires, then refused.
func TestWithdrawnKey(t *testing.T) {
	s := newKeyServer(t, jwksOf(t, "A", "B"), "max-age=600")
	c, clk := newTestCache(Config{})
	wantKey(t, c, s.URL, "A")
	s.set(func(s *keyServer) { s.body = jwksOf(t, "B") })
	clk.Advance(5 * time.Minute)
	wantKey(t, c, s.URL, "A")
	wantRequests(t, s, 1)
	clk.Advance(5*time.Minute + time.Second)
	if _, err := c.Key(t.Context(), s.URL, "A"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("withdrawn key after expiry: %v, want ErrUnknownKey", err)
	}
	wantKey(t, c, s.URL, "B")
	wantRequests(t, s, 2)
}

// TestNewKeyAcceptedPromptly: a kid published after the last fetch is
// accepted at once, even right after a fetch; a flood of forged kids is
// held to the rate limit, and a real new kid is accepted again one
// RefreshInterval later.
func TestNewKeyAcceptedPromptly(t *testing.T) {
	s := newKeyServer(t, jwksOf(t, "A"), "max-age=3600")
	c, clk := newTestCache(Config{RefreshInterval: 10 * time.Second, RefreshBurst: 3})
	wantKey(t, c, s.URL, "A")
	s.set(func(s *keyServer) { s.body = jwksOf(t, "A", "B") })
	wantKey(t, c, s.URL, "B")
	wantRequests(t, s, 2)

	for i := range 20 { // forged kids: two more refreshes, then none
		if _, err := c.Key(t.Context(), s.URL, "forged-"+string(rune('a'+i))); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	wantRequests(t, s, 4)
	s.set(func(s *keyServer) { s.body = jwksOf(t, "A", "B", "C") })
	if _, err := c.Key(t.Context(), s.URL, "C"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("new kid during a flood, within the limit: %v", err)
	}
	clk.Advance(10 * time.Second)
	wantKey(t, c, s.URL, "C")
	wantRequests(t, s, 5)
	wantKey(t, c, s.URL, "A") // the known keys never needed a fetch
	wantRequests(t, s, 5)
}

// TestSlowRefreshDoesNotStall: while one caller refreshes a document
// against a publisher that hangs, other callers are served from the cache
// (no lock is held across the fetch).
func TestSlowRefreshDoesNotStall(t *testing.T) {
	s := newKeyServer(t, jwksOf(t, "A"), "max-age=100")
	other := newKeyServer(t, jwksOf(t, "B"), "max-age=100")
	c, clk := newTestCache(Config{})
	wantKey(t, c, s.URL, "A")
	wantKey(t, c, other.URL, "B")
	block := make(chan struct{})
	arrived := make(chan struct{}, 1)
	s.set(func(s *keyServer) { s.block, s.arrived = block, arrived })
	clk.Advance(95 * time.Second) // in the early-refresh window
	refreshed := make(chan error)
	go func() { _, err := c.Key(context.Background(), s.URL, "A"); refreshed <- err }()
	<-arrived
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	for range 100 {
		if _, err := c.Key(ctx, s.URL, "A"); err != nil {
			t.Fatalf("cached key during a slow refresh: %v", err)
		}
		if _, err := c.Key(ctx, other.URL, "B"); err != nil {
			t.Fatalf("another document during a slow refresh: %v", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("cached lookups took %v during a slow refresh", d)
	}
	close(block)
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	wantRequests(t, s, 2)
}

// TestTimeout: a publisher that never answers costs a caller Timeout, not
// forever, and the error says the fetch is worth retrying.
func TestTimeout(t *testing.T) {
	s := newKeyServer(t, jwksOf(t, "A"), "")
	s.block = make(chan struct{}) // never closed: the request ends when the client gives up
	c, _ := newTestCache(Config{Timeout: 100 * time.Millisecond})
	start := time.Now()
	_, err := c.Key(t.Context(), s.URL, "A")
	var fe *FetchError
	if !errors.As(err, &fe) || !fe.Temporary() || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung publisher: %v, want a temporary *FetchError wrapping the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("fetch gave up after %v, want about 100ms", d)
	}
}

// TestCoalesce: concurrent callers missing the same document share one
// fetch, and a caller that gives up does not fail the others.
func TestCoalesce(t *testing.T) {
	const callers = 10
	s := newKeyServer(t, jwksOf(t, "A"), "")
	block, arrived := make(chan struct{}), make(chan struct{}, 1)
	s.block, s.arrived = block, arrived
	c, _ := newTestCache(Config{})
	errs := make(chan error, callers)
	leaderCtx, cancelLeader := context.WithCancel(t.Context())
	go func() { _, err := c.Key(leaderCtx, s.URL, "A"); errs <- err }()
	<-arrived // the leader's fetch is at the publisher
	for range callers - 1 {
		go func() { _, err := c.Key(t.Context(), s.URL, "A"); errs <- err }()
	}
	// Wait until every other caller waits on the one fetch.
	for deadline := time.Now().Add(5 * time.Second); ; {
		c.mu.Lock()
		var waiting int
		if d := c.docs[s.URL]; d != nil && d.inflight != nil {
			waiting = d.inflight.waiters
		}
		c.mu.Unlock()
		if waiting == callers-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d callers wait on the fetch, want %d", waiting, callers-1)
		}
		time.Sleep(time.Millisecond)
	}
	cancelLeader() // the caller that started the fetch gives up: the fetch goes on
	close(block)
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("caller: %v", err)
		}
	}
	wantRequests(t, s, 1)
}

// TestFetchFailure: a failed fetch's error is returned without a new fetch
// for RetryAfterError; a status that is not 200 or a document that is not
// keys is an error of its own kind.
func TestFetchFailure(t *testing.T) {
	s := newKeyServer(t, jwksOf(t, "A"), "")
	s.status = http.StatusInternalServerError
	c, clk := newTestCache(Config{RetryAfterError: time.Second})
	for range 3 {
		var fe *FetchError
		if _, err := c.Key(t.Context(), s.URL, "A"); !errors.As(err, &fe) || fe.StatusCode != 500 {
			t.Fatalf("publisher down: %v", err)
		}
	}
	wantRequests(t, s, 1)
	clk.Advance(time.Second)
	s.set(func(s *keyServer) { s.status = http.StatusNotFound })
	var fe *FetchError
	if _, err := c.Key(t.Context(), s.URL, "A"); !errors.As(err, &fe) || fe.Temporary() {
		t.Fatalf("404: %v, want a *FetchError that is not temporary", err)
	}
	clk.Advance(time.Second)
	s.set(func(s *keyServer) { s.status, s.body = http.StatusOK, []byte("<html>") })
	if _, err := c.Key(t.Context(), s.URL, "A"); !errors.Is(err, ErrBadDocument) {
		t.Fatalf("HTML: %v, want ErrBadDocument", err)
	}
	clk.Advance(time.Second)
	s.set(func(s *keyServer) { s.body = jwksOf(t, "A") })
	wantKey(t, c, s.URL, "A")
	wantRequests(t, s, 4)
}

func TestMaxDocuments(t *testing.T) {
	c, clk := newTestCache(Config{MaxDocuments: 2})
	var urls []string
	for range 3 {
		s := newKeyServer(t, jwksOf(t, "A"), "")
		urls = append(urls, s.URL)
		wantKey(t, c, s.URL, "A")
		clk.Advance(time.Second)
	}
	if n := len(c.docs); n != 2 {
		t.Fatalf("%d documents held, want 2", n)
	}
	if _, ok := c.docs[urls[0]]; ok {
		t.Fatalf("the least recently used document was kept")
	}
}
