package server

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/saasmarket/marketplace"
)

// FuzzPostUsage sends arbitrary bodies to POST /v1/usage: the answer is
// always 200, 400 or 413 with a JSON body, never a 5xx or a panic.
func FuzzPostUsage(f *testing.F) {
	for _, s := range []string{
		`{"records":[{"event_id":"e","provider":"aws","customer":"c","metric":"tokens","quantity":1}]}`,
		`{"records":[{"provider":"gcp","customer":"c","metric":"tokens","quantity":1e3}]}`,
		`{"records":[{"provider":"aws","product":"prod-inference","customer":"c","metric":"gpu_seconds","quantity":9223372036854775807,"time":"2026-12-01T14:00:00Z"}]}`,
		`{"records":[{"provider":"azure","customer":"\u0000","metric":"tokens","quantity":"1"}]}`,
		`{"records":null}`, `[]`, `{`, ``, `{"records":[{}]}`,
	} {
		f.Add(s)
	}
	h := newBenchServer(f) // one server for every input: the ledger keeps what is valid
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/usage", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		if !strings.HasPrefix(rec.Body.String(), "{") {
			t.Fatalf("body %q: answer is not JSON: %s", body, rec.Body)
		}
	})
}

// FuzzPostSeal sends arbitrary bodies to POST /v1/usage/seal: the answer
// is 200, 400 or 413 with a JSON body, never a 5xx or a panic; 200 only
// for a body that names a configured cloud and a customer, and nothing
// else in it.
func FuzzPostSeal(f *testing.F) {
	for _, s := range []string{`{"provider":"aws","customer":"c1"}`, `{"provider":"gcp","customer":"project_number:100001"}`,
		`{"provider":"azure","customer":"5b0e0d3a-9c1d-4e7b-8f6a-1a2b3c4d5e6f"}`, `{"provider":"aws"}`, `{"provider":"oracle","customer":"c"}`,
		`{"provider":"aws","customer":"c","extra":1}`, `{"provider":"aws","customer":"c","customer":"d"}`, `{"provider":1,"customer":"c"}`,
		`{"provider":"aws","customer":"\ud800"}`, `{}`, `[]`, `null`, `{`, ``} {
		f.Add(s)
	}
	h := newBenchServer(f)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/usage/seal", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var want sealRequest
			if err := jsonv2.Unmarshal([]byte(body), &want, jsonv2.RejectUnknownMembers(true)); err != nil ||
				!marketplace.CloudProvider(want.Provider).Valid() || want.Customer == "" {
				t.Fatalf("body %q: sealed (%s), though it is not a valid request (%v)", body, rec.Body, err)
			}
			var got struct {
				Sealed *int `json:"sealed"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Sealed == nil || *got.Sealed < 0 {
				t.Fatalf("body %q: answer %s", body, rec.Body)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		if !strings.HasPrefix(rec.Body.String(), "{") {
			t.Fatalf("body %q: answer is not JSON: %s", body, rec.Body)
		}
	})
}

// FuzzParseCatalogue decodes arbitrary catalogue files (operator input,
// still from outside the process): an error wraps ErrCatalogue or names
// the file as JSON it cannot read; an accepted catalogue resolves every
// metric it lists to its dimension, with a unit of 1 or more, and survives
// being written out and read again.
func FuzzParseCatalogue(f *testing.F) {
	if b, err := os.ReadFile(catalogueFile); err == nil {
		f.Add(b)
	} else {
		f.Fatal(err)
	}
	for _, s := range []string{`{"products":[]}`, `{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d","unit":-1}}}]}`,
		`{"products":[{"provider":"gcp","product":"s","metrics":{"m":{"dimension":"s/"}}}]}`,
		`{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d"}}},{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d"}}}]}`,
		`{"products":[{"provider":"azure","product":"o","metrics":{"m":{"dimension":"x","unit":9223372036854775807}}}]}`,
		`{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d"}}}],"x":1}`, `null`, `[]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCatalogue(b)
		if err != nil {
			if !errors.Is(err, ErrCatalogue) && !strings.HasPrefix(err.Error(), "catalogue: ") {
				t.Fatalf("error names neither the catalogue nor what is wrong: %v", err)
			}
			return
		}
		if len(c.Products) == 0 {
			t.Fatal("accepted a catalogue with no product")
		}
		for _, p := range c.Products {
			if !p.Provider.Valid() || checkName(p.Product, 256) != nil || len(p.Metrics) == 0 {
				t.Fatalf("accepted product %+v", p)
			}
			for name, m := range p.Metrics {
				if m.Unit < 1 || checkDimension(p.Provider, m.Dimension) != nil {
					t.Fatalf("accepted metric %s: %+v", name, m)
				}
				if d, err := c.Resolve(p.Provider, p.Product, name); err != nil || d != m.Dimension {
					t.Fatalf("metric %s of %s/%s resolves to %q, %v; want %q", name, p.Provider, p.Product, d, err, m.Dimension)
				}
				if u := c.Units()[string(p.Provider)+"/"+m.Dimension]; u != m.Unit {
					t.Fatalf("unit of %s/%s is %d, want %d", p.Provider, m.Dimension, u, m.Unit)
				}
			}
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("accepted a catalogue that cannot be written out: %v", err)
		}
		again, err := ParseCatalogue(out)
		if err != nil || !reflect.DeepEqual(again.Products, c.Products) {
			t.Fatalf("written out and read again: %+v, %v; was %+v", again, err, c.Products)
		}
	})
}

// FuzzParseConfig sets one setting's environment variable to anything (the
// settings are operator input: flags, environment, a unit file): never a
// panic; a refusal names a setting (this one, or one it makes required);
// a secret's value never shows in the
// error.
func FuzzParseConfig(f *testing.F) {
	ss := settings()
	for i, s := range ss {
		f.Add(uint8(i), s.def)
	}
	for _, v := range []string{"", " ", "-1", "0", "9223372036854775808", "1e400", "10ß", "http://", "postgres://u:SECRET-pw@h:5432/db",
		"arn:aws:sns:us-east-1:1:t,", "\x00", "\xff\xfe", "true", "2026-13-01T00:00:00Z", "-87600h"} {
		f.Add(uint8(len(v)*7), v)
	}
	// The catalogue and pages settings read files: the fuzzer must not
	// point them at /dev/zero.
	reads := map[string]bool{"catalogue": true, "pages": true, "data": true}
	base := map[string]string{"MARKETPLACED_API_KEYS": testKey, "MARKETPLACED_CATALOGUE": catalogueFile}
	if _, err := ParseConfig(nil, env(base), io.Discard); err != nil {
		f.Fatalf("the base settings are refused: %v", err)
	}
	f.Fuzz(func(t *testing.T, i uint8, v string) {
		s := ss[int(i)%len(ss)]
		if reads[s.flag] {
			return
		}
		parse := func(v string) error {
			m := maps.Clone(base)
			m[envName(s.flag)] = v
			_, err := ParseConfig(nil, env(m), io.Discard)
			return err
		}
		err := parse(v)
		if err == nil {
			return
		}
		// A setting may enable a cloud whose other settings are then
		// missing: the error names those, or the catalogue file.
		if msg := err.Error(); !strings.Contains(msg, envName(s.flag)) && !strings.Contains(msg, "-"+s.flag) &&
			!strings.HasPrefix(msg, "setting") && !strings.HasPrefix(msg, "catalogue "+catalogueFile) {
			t.Fatalf("%s=%q: the error names no setting: %v", envName(s.flag), v, err)
		}
		if !s.secret {
			return
		}
		// The store's error shows the value with its password blanked
		// (postgres.Redact); the other secrets are never shown.
		if s.flag == "store" {
			for _, pw := range passwords(v) {
				// A password also found elsewhere in the value (as the
				// user name) or in the error's own words proves nothing.
				if len(pw) < 4 || strings.Count(v, pw) != 1 || !strings.Contains(err.Error(), pw) {
					continue
				}
				if other := parse(strings.Replace(v, pw, strings.Repeat("\x01", len(pw)), 1)); other == nil || !strings.Contains(other.Error(), pw) {
					t.Fatalf("%s=%q: the error shows the password %q: %v", envName(s.flag), v, pw, err)
				}
			}
			return
		}
		if len(v) >= 8 && strings.Contains(err.Error(), v) {
			if other := parse(strings.Repeat("x", len(v))); other == nil || !strings.Contains(other.Error(), v) {
				t.Fatalf("%s: the error shows the secret: %v", envName(s.flag), err)
			}
		}
	})
}

// passwords returns what a PostgreSQL client would take for a password in
// a -store value: a URL's (the scheme may be missing) and key=value ones.
func passwords(v string) []string {
	var out []string
	us := []string{v}
	if !strings.Contains(v, "://") {
		// "app:pw@db", or a typo: "postgres:/app:pw@db".
		us = []string{"postgres://" + v}
		if scheme, rest, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(scheme, "postgres") {
			us = append(us, "postgres://"+strings.TrimLeft(rest, "/"))
		}
	}
	for _, u := range us {
		if pu, err := url.Parse(u); err == nil {
			if pw, ok := pu.User.Password(); ok {
				out = append(out, pw)
			}
		}
	}
	for _, m := range keyValuePassword.FindAllStringSubmatch(v, -1) {
		out = append(out, m[1])
	}
	return out
}

var keyValuePassword = regexp.MustCompile(`(?i)password\s*=\s*'?([^'\s]+)`)

// FuzzGetQueries sends arbitrary query strings to the GET routes of /v1
// (filters, page sizes, cursors, times: parsed by hand): the answer is 200
// or 400 with a JSON body, never a 5xx or a panic.
func FuzzGetQueries(f *testing.F) {
	routes := []string{"/v1/subscriptions", "/v1/usage", "/v1/entitlements/check"}
	for _, s := range []struct {
		route uint8
		query string
	}{{0, "provider=aws&state=active&limit=10"}, {0, "provider=gcp&cursor=gcp%2Fsub-1"}, {0, "limit=-1"}, {0, "limit=99999999999999999999"},
		{0, "cursor=%00"}, {1, "provider=aws&customer=c1&from=2026-12-01T00:00:00Z&to=2026-12-01T14:00:00Z"},
		{1, "provider=azure&customer=c&from=2026-13-01T00:00:00Z"}, {1, "state=reported&customer=%E2%9C%93"},
		{2, "provider=aws&customer=cust00000001"}, {2, "provider=gcp&customer=project_number%3A100001&feature=x"}, {2, "provider=&customer="},
		{2, "provider=aws&provider=gcp&customer=c"}, {0, "%zz"}} {
		f.Add(s.route, s.query)
	}
	h := newBenchServer(f)
	f.Fuzz(func(t *testing.T, route uint8, query string) {
		req := httptest.NewRequest("GET", routes[int(route)%len(routes)], nil)
		req.URL.RawQuery = query
		req.Header.Set("Authorization", "Bearer "+testKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("%s?%s: status %d %s", req.URL.Path, query, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s?%s: answer is not JSON: %s", req.URL.Path, query, rec.Body)
		}
	})
}

// FuzzDashboardSignIn posts any secret to the dashboard's sign-in form
// and sends any session cookie to its data route: only an API key signs
// in, and only the cookie that sign-in set reads the data.
func FuzzDashboardSignIn(f *testing.F) {
	h := newBenchServer(f)
	signIn := func(secret string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/dashboard/login", strings.NewReader(url.Values{"secret": {secret}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var genuine string
	for _, c := range signIn(testKey).Result().Cookies() {
		if c.Name == sessionCookie {
			genuine = c.Value
		}
	}
	if genuine == "" {
		f.Fatal("signing in with the API key set no session cookie")
	}
	ts, mac, _ := strings.Cut(genuine, ".")
	for _, s := range [][2]string{{testKey, genuine}, {testKey[:len(testKey)-1], ts + "." + mac[:len(mac)-1] + "A"},
		{testKey + " ", "9999999999." + mac}, {"", "."}, {"\x00", ts + "."}, {strings.ToUpper(testKey), "\"" + genuine + "\""},
		{"ü✓", "+" + genuine}, {"secret", "-1." + mac}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, secret, cookie string) {
		rec := signIn(secret)
		switch {
		case rec.Code == http.StatusSeeOther && secret != testKey && secret != testKey2:
			t.Fatalf("secret %q signed in", secret)
		case rec.Code != http.StatusSeeOther && rec.Code != http.StatusUnauthorized && rec.Code != http.StatusRequestEntityTooLarge:
			t.Fatalf("secret %q: status %d", secret, rec.Code)
		}
		req := httptest.NewRequest("GET", "/dashboard/data", nil)
		req.Header.Set("Cookie", sessionCookie+"="+cookie)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized && !strings.Contains(cookie, genuine) {
			t.Fatalf("cookie %q: status %d", cookie, rec.Code)
		}
	})
}
