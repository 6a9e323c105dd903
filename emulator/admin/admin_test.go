package admin_test

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

func TestFaultsValidate(t *testing.T) {
	cases := []struct {
		name string
		f    admin.Faults
		bad  string // a word the error must name; "" for valid
	}{
		{"zero", admin.Faults{}, ""},
		{"all at the edges", admin.Faults{ThrottleRate: 1, ErrorRate: 0, DropRate: 1, UnprocessedRate: 0.5, ThrottleTPS: 10, Scope: admin.ScopeAll}, ""},
		{"rate above 1", admin.Faults{ErrorRate: 1.5}, "errorRate"},
		{"negative rate", admin.Faults{DropRate: -0.1}, "dropRate"},
		{"negative tps", admin.Faults{ThrottleTPS: -1}, "throttleTPS"},
		{"negative latency", admin.Faults{Latency: admin.Duration(-time.Second)}, "latency"},
		{"unknown scope", admin.Faults{Scope: "billing"}, "scope"},
	}
	for _, tc := range cases {
		err := tc.f.Validate()
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad) || !errors.Is(err, admin.ErrBadRequest)):
			t.Errorf("%s: %v, want an ErrBadRequest naming %s", tc.name, err, tc.bad)
		}
	}
}

func TestFaultsJSONAndFlags(t *testing.T) {
	var f admin.Faults
	if err := json.Unmarshal([]byte(`{"retryAfter":"1.5s","latency":20000000,"throttleRate":0.5}`), &f); err != nil {
		t.Fatal(err)
	}
	if f.RetryAfter != admin.Duration(1500*time.Millisecond) || f.Latency != admin.Duration(20*time.Millisecond) || f.ThrottleRate != 0.5 {
		t.Errorf("decoded %+v", f)
	}
	b, _ := json.Marshal(f)
	if !strings.Contains(string(b), `"retryAfter":"1.5s"`) || !strings.Contains(string(b), `"latency":"20ms"`) {
		t.Errorf("encoded %s", b)
	}
	if err := json.Unmarshal([]byte(`{"latency":"soon"}`), &f); err == nil {
		t.Error(`latency "soon" accepted`)
	}

	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var a, g admin.Faults
	a.RegisterFlags(fs, "aws")
	g.RegisterFlags(fs, "gcp")
	if err := fs.Parse([]string{"-aws-throttle-tps", "10", "-aws-unprocessed-rate", "0.1", "-gcp-retry-after", "3s", "-gcp-fault-scope", "all"}); err != nil {
		t.Fatal(err)
	}
	if a.ThrottleTPS != 10 || a.UnprocessedRate != 0.1 || a.Scope != admin.ScopeMetering || a.RetryAfter != admin.Duration(time.Second) {
		t.Errorf("aws flags: %+v", a)
	}
	if g.RetryAfter != admin.Duration(3*time.Second) || g.Scope != admin.ScopeAll || fs.Lookup("gcp-unprocessed-rate") != nil {
		t.Errorf("gcp flags: %+v", g)
	}
	for _, name := range []string{"throttle-rate", "throttle-tps", "retry-after", "error-rate", "drop-rate", "latency", "fault-scope"} {
		for _, cloud := range []string{"aws", "gcp"} {
			if fs.Lookup(cloud+"-"+name) == nil {
				t.Errorf("no -%s-%s", cloud, name)
			}
		}
	}
}

func TestNewBill(t *testing.T) {
	b := admin.NewBill([]admin.Line{{Buyer: "a", Dimension: "d", Quantity: 2}, {Buyer: "a", Dimension: "d", Quantity: 3}, {Buyer: "b", Dimension: "e", Quantity: 1}})
	if b.Totals["a"]["d"] != 5 || b.Totals["b"]["e"] != 1 || len(b.Lines) != 3 {
		t.Errorf("%+v", b)
	}
	if empty := admin.NewBill(nil); empty.Lines == nil || empty.Totals == nil {
		t.Errorf("an empty bill must encode as [] and {}: %+v", empty)
	}
}

// TestFaultMapping: what the three emulators share when they map the
// shared faults to their own: validation, the refusal of unprocessedRate
// where the cloud has none, and the scope both ways.
func TestFaultMapping(t *testing.T) {
	// own is an emulator's settings: a rate and its scope.
	type own struct {
		rate     float64
		metering bool
	}
	mapping := func(noUnprocessed string) admin.FaultMapping[own] {
		return admin.FaultMapping[own]{
			NoUnprocessed: noUnprocessed,
			To:            func(f admin.Faults, meteringOnly bool) own { return own{f.ErrorRate, meteringOnly} },
			From:          func(o own) (admin.Faults, bool) { return admin.Faults{ErrorRate: o.rate}, o.metering },
		}
	}
	cases := []struct {
		name          string
		noUnprocessed string
		f             admin.Faults
		want          own
		wantScope     string
		bad           string // a word the error must name; "" for valid
	}{
		{"default scope is metering", "", admin.Faults{ErrorRate: 0.5}, own{0.5, true}, admin.ScopeMetering, ""},
		{"scope metering", "", admin.Faults{ErrorRate: 0.2, Scope: admin.ScopeMetering}, own{0.2, true}, admin.ScopeMetering, ""},
		{"scope all", "", admin.Faults{ErrorRate: 0.1, Scope: admin.ScopeAll}, own{0.1, false}, admin.ScopeAll, ""},
		{"invalid", "", admin.Faults{ErrorRate: 2}, own{}, "", "errorRate"},
		{"unprocessed where the cloud has it", "", admin.Faults{UnprocessedRate: 0.3}, own{0, true}, admin.ScopeMetering, ""},
		{"unprocessed where it has none", "its own status", admin.Faults{UnprocessedRate: 0.3}, own{}, "", "its own status"},
	}
	for _, tc := range cases {
		m := mapping(tc.noUnprocessed)
		var set []own
		err := m.Set(tc.f, func(o own) { set = append(set, o) })
		if tc.bad != "" {
			if err == nil || !errors.Is(err, admin.ErrBadRequest) || !strings.Contains(err.Error(), tc.bad) || len(set) != 0 {
				t.Errorf("%s: %v (set %v), want an ErrBadRequest naming %q and nothing set", tc.name, err, set, tc.bad)
			}
			continue
		}
		if err != nil || len(set) != 1 || set[0] != tc.want {
			t.Errorf("%s: set %v, %v; want %v", tc.name, set, err, tc.want)
			continue
		}
		if back := m.Shared(set[0]); back.Scope != tc.wantScope || back.ErrorRate != tc.want.rate {
			t.Errorf("%s: back %+v, want scope %q and errorRate %g", tc.name, back, tc.wantScope, tc.want.rate)
		}
	}
}
