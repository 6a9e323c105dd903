package aws_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/aws"
	emu "github.com/saasmarket/marketplace/emulator/aws"
)

// The service models are the official botocore files in the repository's
// specs/aws (copies of the project's shared specs).

type shape struct {
	Type    string `json:"type"`
	Members map[string]struct {
		Shape string `json:"shape"`
	} `json:"members"`
	Required []string `json:"required"`
	Member   struct {
		Shape string `json:"shape"`
	} `json:"member"`
	Key struct {
		Shape string `json:"shape"`
	} `json:"key"`
	Value struct {
		Shape string `json:"shape"`
	} `json:"value"`
	Enum []string `json:"enum"`
	Max  *float64 `json:"max"`
	Min  *float64 `json:"min"`
}

type model struct {
	Metadata struct {
		TargetPrefix string `json:"targetPrefix"`
	} `json:"metadata"`
	Operations map[string]struct {
		Input  struct{ Shape string } `json:"input"`
		Output struct{ Shape string } `json:"output"`
	} `json:"operations"`
	Shapes map[string]shape `json:"shapes"`
}

func loadModel(t *testing.T, file string) *model {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "specs", "aws", file))
	if err != nil {
		t.Fatal(err)
	}
	var m model
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

// check reports every way v (decoded JSON) departs from shape name.
func (m *model) check(name, path string, v any) []string {
	s, ok := m.Shapes[name]
	if !ok {
		return []string{path + ": unknown shape " + name}
	}
	bad := func(format string, a ...any) []string { return []string{path + ": " + fmt.Sprintf(format, a...)} }
	switch s.Type {
	case "structure":
		obj, ok := v.(map[string]any)
		if !ok {
			return bad("want an object (%s), got %T", name, v)
		}
		var errs []string
		for k, x := range obj {
			mem, ok := s.Members[k]
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: field %q is not a member of %s", path, k, name))
				continue
			}
			errs = append(errs, m.check(mem.Shape, path+"."+k, x)...)
		}
		for _, r := range s.Required {
			if _, ok := obj[r]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required %q missing", path, r))
			}
		}
		return errs
	case "list":
		arr, ok := v.([]any)
		if !ok {
			return bad("want a list (%s), got %T", name, v)
		}
		if s.Max != nil && float64(len(arr)) > *s.Max {
			return bad("%d items, max %v", len(arr), *s.Max)
		}
		var errs []string
		for i, x := range arr {
			errs = append(errs, m.check(s.Member.Shape, fmt.Sprintf("%s[%d]", path, i), x)...)
		}
		return errs
	case "map":
		obj, ok := v.(map[string]any)
		if !ok {
			return bad("want a map (%s), got %T", name, v)
		}
		var errs []string
		for k, x := range obj {
			errs = append(errs, m.check(s.Key.Shape, path+"{key}", k)...)
			errs = append(errs, m.check(s.Value.Shape, path+"."+k, x)...)
		}
		return errs
	case "string":
		str, ok := v.(string)
		if !ok {
			return bad("want a string (%s), got %T", name, v)
		}
		if len(s.Enum) > 0 && !slices.Contains(s.Enum, str) {
			return bad("%q not in %v", str, s.Enum)
		}
		return nil
	case "integer", "long":
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return bad("want an integer (%s), got %v", name, v)
		}
		if (s.Min != nil && f < *s.Min) || (s.Max != nil && f > *s.Max) {
			return bad("%v out of range", f)
		}
		return nil
	case "double":
		if _, ok := v.(float64); !ok {
			return bad("want a number (%s), got %T", name, v)
		}
		return nil
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad("want a boolean (%s), got %T", name, v)
		}
		return nil
	case "timestamp":
		if _, ok := v.(float64); !ok {
			return bad("want epoch seconds as a JSON number (%s), got %T %v", name, v, v)
		}
		return nil
	}
	return bad("shape type %q not handled", s.Type)
}

func decodeJSON(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return v
}

// TestGoldenPayloads checks every golden payload against the service model.
func TestGoldenPayloads(t *testing.T) {
	models := map[string]*model{
		"AWSMPMeteringService":    loadModel(t, "meteringmarketplace.service-2.json"),
		"AWSMPEntitlementService": loadModel(t, "marketplace-entitlement.service-2.json"),
	}
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			op, _, _ := strings.Cut(filepath.Base(f), ".")
			kind := "input"
			if strings.HasSuffix(f, ".response.json") {
				kind = "output"
			}
			m := models["AWSMPMeteringService"]
			if op == "GetEntitlements" {
				m = models["AWSMPEntitlementService"]
			}
			var shapeName string
			if strings.HasSuffix(op, "Exception") {
				shapeName = op
				v := decodeJSON(t, raw).(map[string]any)
				typ, _ := v["__type"].(string)
				if !strings.HasSuffix(typ, "#"+op) {
					t.Errorf("__type %q does not name %s", typ, op)
				}
				delete(v, "__type")
				for _, e := range m.check(shapeName, op, v) {
					t.Error(e)
				}
				return
			}
			o, ok := m.Operations[op]
			if !ok {
				t.Fatalf("no operation %s", op)
			}
			shapeName = o.Input.Shape
			if kind == "output" {
				shapeName = o.Output.Shape
			}
			for _, e := range m.check(shapeName, op, decodeJSON(t, raw)) {
				t.Error(e)
			}
		})
	}
}

type exchange struct {
	target   string
	req, out []byte
	status   int
}

// TestWireMatchesSpec drives every operation through the official SDK
// against the emulator and checks each request the SDK sent and each
// answer the emulator gave against the service models.
func TestWireMatchesSpec(t *testing.T) {
	e := newEnv(t, emu.Config{EmptyPages: true})
	var mu sync.Mutex
	var seen []exchange
	inner := e.emu
	var watch http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		mu.Lock()
		seen = append(seen, exchange{r.Header.Get("X-Amz-Target"), body, rec.Body.Bytes(), rec.Code})
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
	e.wrap.Store(&watch)
	ctx := t.Context()
	b := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", CustomerIdentifier: "c1"})
	lic := e.emu.AddBuyer(emu.Buyer{ProductCode: "p", LicenseArn: "new"})
	n, yes, d, s := int64(5), true, 2.5, "gold"
	exp := e.clock.Now().Add(time.Hour)
	_ = e.emu.SetEntitlements(b.Key(), []emu.Entitlement{{Dimension: "a", IntegerValue: &n, ExpirationDate: &exp}, {Dimension: "b", BooleanValue: &yes}})
	_ = e.emu.SetEntitlements(lic.Key(), []emu.Entitlement{{Dimension: "c", DoubleValue: &d}, {Dimension: "e", StringValue: &s}})
	tok, _ := e.emu.MintToken(b.Key(), time.Hour)
	now := e.clock.Now()
	steps := []func() error{
		func() error { _, err := e.meter.ResolveCustomer(ctx, tok); return err },
		func() error {
			_, err := e.meter.BatchMeterUsage(ctx, &aws.BatchMeterUsageInput{ProductCode: "p", UsageRecords: []aws.UsageRecord{
				{CustomerIdentifier: "c1", Dimension: "d", Quantity: 4, Timestamp: now,
					UsageAllocations: []aws.UsageAllocation{{AllocatedUsageQuantity: 4, Tags: map[string]string{"k": "v"}}}},
				{CustomerIdentifier: "c1", Dimension: "d", Quantity: 5, Timestamp: now}}})
			return err
		},
		func() error {
			_, err := e.meter.BatchMeterUsage(ctx, &aws.BatchMeterUsageInput{UsageRecords: []aws.UsageRecord{
				{CustomerAWSAccountId: lic.CustomerAWSAccountId, LicenseArn: lic.LicenseArn, Dimension: "d", Quantity: 1, Timestamp: now}}})
			return err
		},
		func() error {
			_, err := e.meter.MeterUsage(ctx, &aws.MeterUsageInput{ProductCode: "p", Dimension: "d", Quantity: 1, Timestamp: now, ClientToken: "t"})
			return err
		},
		func() error {
			_, err := e.meter.RegisterUsage(ctx, &aws.RegisterUsageInput{ProductCode: "p", PublicKeyVersion: 1, Nonce: "n"})
			return err
		},
		func() error {
			_, err := aws.NewEntitlements(e.ent).GetEntitlements(ctx, "p", aws.EntitlementFilter{})
			return err
		},
		func() error { // an error answer
			_, err := e.meter.ResolveCustomer(ctx, "forged")
			if err == nil {
				return fmt.Errorf("forged token accepted")
			}
			return nil
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	models := map[string]*model{
		"AWSMPMeteringService":    loadModel(t, "meteringmarketplace.service-2.json"),
		"AWSMPEntitlementService": loadModel(t, "marketplace-entitlement.service-2.json"),
	}
	if len(seen) < len(steps) {
		t.Fatalf("saw %d exchanges", len(seen))
	}
	for _, x := range seen {
		prefix, op, _ := strings.Cut(x.target, ".")
		m := models[prefix]
		o := m.Operations[op]
		for _, err := range m.check(o.Input.Shape, x.target+" request", decodeJSON(t, x.req)) {
			t.Error(err)
		}
		out := decodeJSON(t, x.out)
		if x.status != http.StatusOK {
			obj := out.(map[string]any)
			typ, _ := obj["__type"].(string)
			_, code, _ := strings.Cut(typ, "#")
			delete(obj, "__type")
			for _, err := range m.check(code, x.target+" error", obj) {
				t.Error(err)
			}
			continue
		}
		for _, err := range m.check(o.Output.Shape, x.target+" response", out) {
			t.Error(err)
		}
	}
}
