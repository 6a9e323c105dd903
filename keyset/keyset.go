// Package keyset caches the public keys that sign inbound notifications:
// Google's sign-up JWTs (a JSON map of x509 certificates), Azure's webhook
// JWTs (a JWKS) and AWS SNS messages (one PEM certificate per URL). The
// document formats differ, so a Cache takes a DecodeFunc; everything else is
// shared:
//
//   - A fetched document is trusted for its Cache-Control max-age (less its
//     Age), kept within [Config.MinTTL, Config.MaxTTL], or Config.DefaultTTL
//     without one. Once that has passed, its keys are no longer served: a key
//     the publisher withdrew stops being trusted when the set expires, even if
//     the refresh fails.
//   - In the last tenth of that time one caller refreshes the document while
//     every other caller keeps using the cached keys; the refresh runs outside
//     the cache's lock, bounded by Config.Timeout.
//   - Concurrent refreshes of one document are coalesced into one fetch.
//   - An unknown key id refreshes the document at once, so a token signed
//     with a newly published key is accepted promptly. Such refreshes are
//     rate-limited per document by a token bucket (Config.RefreshBurst,
//     refilled every Config.RefreshInterval), so forged key ids cannot make the
//     cache hammer the publisher.
//   - After a failed fetch, callers get its error for Config.RetryAfterError
//     without a new fetch.
//
// The cache starts no goroutine: a fetch runs in the caller that needs it.
package keyset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DecodeFunc turns a fetched document into its keys, by key id. A document
// with a single key without an id (an SNS certificate) uses the id "".
type DecodeFunc[K any] func(body []byte) (map[string]K, error)

// Config tunes a Cache; zero values take the defaults.
type Config struct {
	// HTTPClient fetches documents; default a client with Timeout. Its
	// redirect policy applies (SNS refuses redirects).
	HTTPClient *http.Client
	// Timeout bounds one fetch, whatever the caller's context; default 10 s.
	Timeout time.Duration
	// DefaultTTL is how long a document without Cache-Control max-age is
	// trusted; default 1 hour.
	DefaultTTL time.Duration
	// MinTTL and MaxTTL bound the trust given to max-age; default 1 minute
	// and 24 hours. A max-age of 0 or no-store is treated as MinTTL.
	MinTTL, MaxTTL time.Duration
	// RefreshInterval and RefreshBurst rate-limit the refreshes caused by
	// unknown key ids, per document: RefreshBurst of them at once, then one
	// per RefreshInterval; defaults 10 s and 3.
	RefreshInterval time.Duration
	RefreshBurst    int
	// RetryAfterError is how long a failed fetch's error is returned
	// before the document is fetched again; default 1 s.
	RetryAfterError time.Duration
	// MaxDocuments bounds the documents (URLs) held; default 32. Only SNS,
	// with a certificate URL per region and rotation, holds more than one.
	MaxDocuments int
	// MaxBody bounds a document's size; default 1 MiB.
	MaxBody int64
	// Clock decides expiry and rate limits; default time.Now.
	Clock func() time.Time
}

// ErrUnknownKey is returned for a key id that the (fresh) document does not
// hold: the token or message is not authentic.
var ErrUnknownKey = errors.New("keyset: unknown key id")

// ErrBadDocument is wrapped when a fetched document cannot be decoded.
var ErrBadDocument = errors.New("keyset: bad key document")

// FetchError is a failed fetch of a document: a transport error
// (StatusCode 0) or a status other than 200.
type FetchError struct {
	URL        string
	StatusCode int
	Err        error
}

func (e *FetchError) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("keyset: fetch %s: HTTP %d", e.URL, e.StatusCode)
	}
	return fmt.Sprintf("keyset: fetch %s: %v", e.URL, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may succeed: a transport
// error, 429 or a 5xx. Any other status means the URL serves no keys.
func (e *FetchError) Temporary() bool {
	return e.StatusCode == 0 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Cache holds key documents by URL. It is safe for concurrent use.
type Cache[K any] struct {
	decode DecodeFunc[K]
	cfg    Config

	mu   sync.Mutex
	docs map[string]*document[K]
}

// document is the state of one URL; its fields change under Cache.mu.
type document[K any] struct {
	keys        map[string]K // nil until the first successful fetch
	expires     time.Time    // keys are not served from then on
	refreshFrom time.Time    // a hit from then on refreshes early
	tokens      float64      // unknown-kid refreshes available
	tokensAt    time.Time
	err         error // the last fetch's error, nil after a success
	errAt       time.Time
	lastUsed    time.Time
	inflight    *fetch
}

// fetch is one refresh in flight; done closes when it has been applied.
type fetch struct {
	done    chan struct{}
	waiters int // callers waiting on it besides the one fetching (tests)
}

// New returns an empty cache that decodes documents with decode.
func New[K any](decode DecodeFunc[K], cfg Config) *Cache[K] {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Timeout, 10*time.Second)
	def(&cfg.DefaultTTL, time.Hour)
	def(&cfg.MinTTL, time.Minute)
	def(&cfg.MaxTTL, 24*time.Hour)
	def(&cfg.RefreshInterval, 10*time.Second)
	def(&cfg.RetryAfterError, time.Second)
	if cfg.RefreshBurst <= 0 {
		cfg.RefreshBurst = 3
	}
	if cfg.MaxDocuments <= 0 {
		cfg.MaxDocuments = 32
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.Timeout}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Cache[K]{decode: decode, cfg: cfg, docs: make(map[string]*document[K])}
}

// Key returns the key kid of the document at url, fetching the document
// when it is not cached, has expired, or (rate-limited) does not hold kid.
// The error wraps ErrUnknownKey when the document does not hold kid; a
// *FetchError or ErrBadDocument when no fresh document could be had.
func (c *Cache[K]) Key(ctx context.Context, url, kid string) (K, error) {
	var zero K
	refreshed := false // this call has seen a refresh complete
	for {
		c.mu.Lock()
		d := c.document(url)
		now := c.cfg.Clock()
		d.lastUsed = now
		fresh := d.keys != nil && now.Before(d.expires)
		key, known := d.keys[kid]
		var f *fetch
		switch {
		case fresh && known:
			if refreshed || now.Before(d.refreshFrom) || d.inflight != nil || d.backingOff(c, now) {
				c.mu.Unlock()
				return key, nil
			}
			// Refresh early; every other caller keeps using the keys.
			f = c.start(d)
		case fresh && (refreshed || (d.inflight == nil && (d.backingOff(c, now) || !d.take(c, now)))):
			// The document was refreshed for kid, or may not be now.
			c.mu.Unlock()
			return zero, fmt.Errorf("%w %q at %s", ErrUnknownKey, kid, url)
		case !fresh && (refreshed || (d.inflight == nil && d.backingOff(c, now))):
			err := d.err
			c.mu.Unlock()
			if err == nil { // refreshed by another caller, and expired again
				err = &FetchError{URL: url, Err: errors.New("no fresh key document")}
			}
			return zero, err
		case d.inflight != nil:
			f = d.inflight
			f.waiters++
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return zero, fmt.Errorf("keyset: waiting for %s: %w", url, ctx.Err())
			}
			refreshed = true
			continue
		default: // absent, expired, or an unknown kid with a refresh allowed (and taken)
			f = c.start(d)
		}
		c.mu.Unlock()
		c.refresh(ctx, url, d, f)
		refreshed = true
	}
}

// Keyfunc returns a jwt.Keyfunc that looks the token's kid header up in the
// document at url.
func (c *Cache[K]) Keyfunc(ctx context.Context, url string) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, fmt.Errorf("%w: the token has no kid", ErrUnknownKey)
		}
		return c.Key(ctx, url, kid)
	}
}

// document returns url's state, making room for it if needed. The caller
// holds c.mu.
func (c *Cache[K]) document(url string) *document[K] {
	if d, ok := c.docs[url]; ok {
		return d
	}
	if len(c.docs) >= c.cfg.MaxDocuments {
		// Forget the least recently used document that is not being fetched.
		var victim string
		var oldest time.Time
		for u, d := range c.docs {
			if d.inflight == nil && (victim == "" || d.lastUsed.Before(oldest)) {
				victim, oldest = u, d.lastUsed
			}
		}
		delete(c.docs, victim)
	}
	d := &document[K]{tokens: float64(c.cfg.RefreshBurst)}
	c.docs[url] = d
	return d
}

// backingOff reports whether d's last fetch failed too recently to try again.
func (d *document[K]) backingOff(c *Cache[K], now time.Time) bool {
	return d.err != nil && now.Sub(d.errAt) < c.cfg.RetryAfterError
}

// take spends one unknown-kid refresh if the bucket has one.
func (d *document[K]) take(c *Cache[K], now time.Time) bool {
	if el := now.Sub(d.tokensAt); el > 0 {
		d.tokens = min(float64(c.cfg.RefreshBurst), d.tokens+float64(el)/float64(c.cfg.RefreshInterval))
	}
	d.tokensAt = now
	if d.tokens < 1 {
		return false
	}
	d.tokens--
	return true
}

// start marks a refresh of d in flight. The caller holds c.mu.
func (c *Cache[K]) start(d *document[K]) *fetch {
	f := &fetch{done: make(chan struct{})}
	d.inflight = f
	return f
}

// refresh fetches url without holding the lock and applies the outcome to
// d. The fetch is not cancelled with ctx, as other callers may be waiting
// for it; Config.Timeout bounds it.
func (c *Cache[K]) refresh(ctx context.Context, url string, d *document[K], f *fetch) {
	keys, ttl, err := c.fetch(context.WithoutCancel(ctx), url)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock()
	if err != nil {
		d.err, d.errAt = err, now
	} else {
		d.keys, d.err = keys, nil
		d.expires = now.Add(ttl)
		d.refreshFrom = now.Add(ttl - ttl/10)
	}
	d.inflight = nil
	close(f.done)
}

func (c *Cache[K]) fetch(ctx context.Context, url string) (map[string]K, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, &FetchError{URL: url, Err: err}
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, 0, &FetchError{URL: url, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, &FetchError{URL: url, StatusCode: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxBody+1))
	if err != nil {
		return nil, 0, &FetchError{URL: url, Err: err}
	}
	if int64(len(body)) > c.cfg.MaxBody {
		return nil, 0, fmt.Errorf("%w at %s: larger than %d bytes", ErrBadDocument, url, c.cfg.MaxBody)
	}
	keys, err := c.decode(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%w at %s: %w", ErrBadDocument, url, err)
	}
	if keys == nil {
		keys = map[string]K{}
	}
	return keys, c.ttl(resp.Header), nil
}

// ttl is how long a response may be trusted: max-age less Age, bounded.
func (c *Cache[K]) ttl(h http.Header) time.Duration {
	maxAge, ok := cacheMaxAge(h.Get("Cache-Control"))
	if !ok {
		return c.cfg.DefaultTTL
	}
	if age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && age > 0 {
		maxAge -= time.Duration(min(age, 1<<32)) * time.Second
	}
	return min(max(maxAge, c.cfg.MinTTL), c.cfg.MaxTTL)
}

// cacheMaxAge reads max-age from a Cache-Control header; no-store and
// no-cache count as 0.
func cacheMaxAge(cc string) (time.Duration, bool) {
	found, age := false, time.Duration(0)
	for dir := range strings.SplitSeq(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return 0, true
		case "max-age":
			n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
			if err != nil || n < 0 {
				return 0, true // a malformed max-age is stale (RFC 9111 §4.2.1)
			}
			found, age = true, time.Duration(min(n, 1<<32))*time.Second
		}
	}
	return age, found
}
