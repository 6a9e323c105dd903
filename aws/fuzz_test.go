package aws_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
)

func seeds(f *testing.F, glob string) {
	files, err := filepath.Glob(filepath.Join("testdata", "notifications", glob))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds %s: %v", glob, err)
	}
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
}

// FuzzDecodeSNS: no input panics; whatever decodes has the fields the
// verifier needs and gives its MessageId to its event; and delivered to
// NotificationHandler (whose certificate fetches always fail), nothing is
// ever accepted or stored.
func FuzzDecodeSNS(f *testing.F) {
	seeds(f, "sns-*.json")
	e := newEnv(f, emu.Config{})
	cfg := baseConfig(e)
	cfg.SNSTopicARNs = []string{"arn:aws:sns:us-east-1:287250355862:aws-mp-subscription-notification-prod"}
	cfg.HTTPClient = &http.Client{Transport: failingTransport{}}
	a := newApp(f, e, cfg)
	h := a.NotificationHandler()
	f.Fuzz(func(t *testing.T, body []byte) {
		if m, err := aws.DecodeSNS(body); err == nil {
			if m.MessageID == "" || m.TopicArn == "" {
				t.Fatalf("decoded without MessageId or TopicArn: %+v", m)
			}
			_ = m.StringToSign()
			if m.Type == "Notification" {
				if ev, err := aws.EventOfSNS(m); err == nil && ev.ID != m.MessageID {
					t.Fatalf("event id %q, message id %q", ev.ID, m.MessageID)
				}
			}
		}
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/notifications", strings.NewReader(string(body)))
		req.Header.Set("x-amz-sns-message-type", "Notification")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code < 400 {
			t.Fatalf("unverifiable message answered %d", w.Code)
		}
		if ns, _ := e.store.ListNotifications(t.Context(), marketplace.AWS, "", 1); len(ns) != 0 {
			t.Fatalf("unverifiable message stored: %+v", ns[0])
		}
	})
}

// failingTransport refuses every request: fuzzing must not reach out.
type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, http.ErrHandlerTimeout
}

// FuzzDecodeEventBridge: no input panics, a decoded event always has an
// id, a detail-type and a time, and every failure names its kind
// (malformed or of another source).
func FuzzDecodeEventBridge(f *testing.F) {
	seeds(f, "eventbridge-*.json")
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := aws.DecodeEventBridge(body)
		if err != nil {
			if !errors.Is(err, marketplace.ErrInvalidInput) && !errors.Is(err, marketplace.ErrUnrelated) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if ev.ID == "" || ev.Kind == "" || ev.Time.IsZero() {
			t.Fatalf("decoded an incomplete event: %+v", ev)
		}
	})
}

// FuzzLanding posts arbitrary bodies to the landing handler: it never
// panics, never answers 5xx for a bad request, and never stores a
// subscription for a token the emulator did not mint.
func FuzzLanding(f *testing.F) {
	e := newEnv(f, emu.Config{})
	p := newApp(f, e, baseConfig(e))
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: product})
	tok, _ := e.emu.MintToken(b.Key(), 1000*time.Hour)
	h := p.LandingHandler()
	f.Add("application/x-www-form-urlencoded", "x-amzn-marketplace-token="+tok)
	f.Add("application/x-www-form-urlencoded", "x-amzn-marketplace-token=forged&x=1")
	f.Add("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"x-amzn-marketplace-token\"\r\n\r\nabc\r\n--x--\r\n")
	f.Add("text/plain", "%%%")
	f.Fuzz(func(t *testing.T, contentType, body string) {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/aws/register", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%q %q: %d %s", contentType, body, w.Code, w.Body)
		}
		subs, err := e.store.ListSubscriptions(t.Context(), marketplace.SubscriptionFilter{Provider: marketplace.AWS})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range subs {
			if s.CustomerID != b.Key() {
				t.Fatalf("stored a subscription for %q", s.CustomerID)
			}
		}
	})
}
