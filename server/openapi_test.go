package server

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The OpenAPI document checks every request and response this package's
// tests make: each test server is wrapped by validated. A request the
// document refuses must be refused by the server (4xx); every response must
// be one the document describes, status and body. TestMain then checks that
// the tests exercised every documented operation.

var spec = sync.OnceValues(func() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(OpenAPI)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.json is not a valid OpenAPI document: %w", err)
	}
	return doc, nil
})

var specRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := spec()
	if err != nil {
		return nil, err
	}
	cp := *doc
	cp.Servers = nil // match the test servers' random ports
	return legacy.NewRouter(&cp)
})

// exercised records the operations the tests hit, with a 2xx and otherwise.
var exercised sync.Map // operationId → struct{}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && !testing.Short() {
		doc, err := spec()
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		var missing []string
		for path, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				if _, ok := exercised.Load(op.OperationID); !ok {
					missing = append(missing, method+" "+path)
				}
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			fmt.Println("FAIL: operations of openapi.json that no test exercised:", strings.Join(missing, ", "))
			code = 1
		}
	}
	os.Exit(code)
}

func TestOpenAPIDocument(t *testing.T) {
	doc, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	h := newHarness(t, harnessOptions{})
	resp, body := h.do(t, "GET", "/openapi.json", nil, "")
	if resp.StatusCode != 200 || !bytes.Equal(body, OpenAPI) {
		t.Fatalf("GET /openapi.json: %d, %d bytes; want the embedded document", resp.StatusCode, len(body))
	}
}

// validated wraps h so that each exchange is checked against the document.
func validated(t *testing.T, h http.Handler) http.Handler {
	router, err := specRouter()
	if err != nil {
		t.Fatal(err)
	}
	return validatedBy(router, t.Errorf, h)
}

func validatedBy(router routers.Router, report func(string, ...any), h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength < 0 {
			// A streamed body (the tests that hold a request in flight):
			// buffering it here would hold it before the server sees it.
			h.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			// The client's body failed (a test's broken pipe): let the
			// server see the same.
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
			h.ServeHTTP(w, r)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		route, params, routeErr := router.FindRoute(r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())

		if routeErr != nil {
			if cloudEndpoint.MatchString(r.URL.Path) {
				return // each cloud's own protocol, outside the document
			}
			if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
				report("openapi: %s %s is not in the document, but the server answered %d", r.Method, r.URL.Path, rec.Code)
			}
			return
		}
		exercised.Store(route.Operation.OperationID, struct{}{})
		opts := &openapi3filter.Options{
			AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
			IncludeResponseStatus: true,
			MultiError:            true,
		}
		reqIn := &openapi3filter.RequestValidationInput{Request: r.Clone(context.Background()), PathParams: params, Route: route, Options: opts}
		reqIn.Request.Body = io.NopCloser(bytes.NewReader(body))
		if err := openapi3filter.ValidateRequest(context.Background(), reqIn); err != nil && rec.Code < 400 {
			report("openapi: the document refuses %s %s (%v), but the server answered %d", r.Method, r.URL, err, rec.Code)
		}
		respIn := &openapi3filter.ResponseValidationInput{RequestValidationInput: reqIn, Status: rec.Code, Header: rec.Header(), Options: opts}
		respIn.SetBodyBytes(rec.Body.Bytes())
		if err := openapi3filter.ValidateResponse(context.Background(), respIn); err != nil {
			report("openapi: response to %s %s (%d %s) does not match the document: %v", r.Method, r.URL, rec.Code, rec.Body.String(), err)
		}
	})
}

// cloudEndpoint matches the landing and notification endpoints, whose shape
// each cloud defines (docs/aws.md, docs/azure.md, docs/gcp.md).
var cloudEndpoint = regexp.MustCompile(`^/(aws|azure|gcp)/(landing|notifications)$`)

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestValidatorCatchesDrift proves the checks above can fail: a handler that
// drifts from the document, in each way, is reported.
func TestValidatorCatchesDrift(t *testing.T) {
	router, err := specRouter()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, method, path, body string
		status                   int
		resp                     string
	}{
		{"wrong field type", "GET", "/v1/entitlements/check?provider=aws&customer=c", "", 200, `{"entitled":"yes"}`},
		{"undocumented status", "GET", "/v1/entitlements/check?provider=aws&customer=c", "", 418, `{}`},
		{"missing required field", "POST", "/v1/usage", `{"records":[{"provider":"aws","customer":"c","metric":"m","quantity":1}]}`, 200, `{"accepted":1}`},
		{"refused request accepted", "POST", "/v1/usage", `{"records":[{"provider":"aws","customer":"c","metric":"m","quantity":-1}]}`, 200, `{"accepted":1,"duplicates":0,"duplicate_event_ids":[]}`},
		{"undocumented route served", "GET", "/v1/secret", "", 200, `{}`},
		{"discard answered without the row", "DELETE", "/v1/quarantine/1", "", 200, `{"discarded":{"id":1}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var reports []string
			h := validatedBy(router, func(f string, a ...any) { reports = append(reports, fmt.Sprintf(f, a...)) },
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(c.status)
					io.WriteString(w, c.resp)
				}))
			req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(httptest.NewRecorder(), req)
			if len(reports) == 0 {
				t.Fatal("the drift was not reported")
			}
		})
	}
}
