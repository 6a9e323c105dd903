package azure_test

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/saasmarket/marketplace/azure"
)

// spec is one of Microsoft's OpenAPI files, as copied into the repository's specs/azure.
type spec struct{ schemas map[string]any }

func loadSpec(t *testing.T, name string) spec {
	t.Helper()
	b, err := os.ReadFile("../specs/azure/" + name)
	if err != nil {
		t.Fatalf("the spec files are needed: %v", err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return spec{doc.Components.Schemas}
}

func (s spec) resolve(schema map[string]any) map[string]any {
	for {
		ref, ok := schema["$ref"].(string)
		if !ok {
			return schema
		}
		schema = s.schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
	}
}

// check reports every field of v that the schema does not define, or
// defines with another type or format.
func (s spec) check(t *testing.T, path string, v any, schema map[string]any) {
	t.Helper()
	schema = s.resolve(schema)
	typ, _ := schema["type"].(string)
	switch x := v.(type) {
	case map[string]any:
		if typ != "object" && typ != "" {
			t.Errorf("%s: object where the spec has %s", path, typ)
		}
		props, _ := schema["properties"].(map[string]any)
		for k, fv := range x {
			ps, ok := props[k].(map[string]any)
			if !ok {
				t.Errorf("%s.%s: not in the spec", path, k)
				continue
			}
			s.check(t, path+"."+k, fv, ps)
		}
	case []any:
		if typ != "array" {
			t.Errorf("%s: array where the spec has %s", path, typ)
			return
		}
		for i, e := range x {
			s.check(t, path+"["+string(rune('0'+i%10))+"]", e, schema["items"].(map[string]any))
		}
	case string:
		if typ != "string" {
			t.Errorf("%s: string where the spec has %s", path, typ)
		}
		if enum, ok := schema["enum"].([]any); ok && !containsAny(enum, x) {
			t.Errorf("%s: %q not in %v", path, x, enum)
		}
		switch schema["format"] {
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
				t.Errorf("%s: %q is not a date-time", path, x)
			}
		case "uuid":
			if _, err := uuid.Parse(x); err != nil {
				t.Errorf("%s: %q is not a uuid", path, x)
			}
		}
	case float64:
		if typ != "number" && typ != "integer" {
			t.Errorf("%s: number where the spec has %s", path, typ)
		}
		if typ == "integer" && x != float64(int64(x)) {
			t.Errorf("%s: %v is not an integer", path, x)
		}
	case bool:
		if typ != "boolean" {
			t.Errorf("%s: boolean where the spec has %s", path, typ)
		}
	case nil:
	}
}

func containsAny(list []any, v string) bool {
	for _, e := range list {
		if e == v {
			return true
		}
	}
	return false
}

func readJSON(t *testing.T, name string) (raw []byte, v any) {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return raw, v
}

// TestGoldenPayloads checks the golden payloads against the spec files,
// and that our types encode (requests) or decode (responses) them exactly.
func TestGoldenPayloads(t *testing.T) {
	metering, saas := loadSpec(t, "meteringapi.v1.json"), loadSpec(t, "saasapi.v2.json")
	cases := []struct {
		file   string
		spec   spec
		schema string
		into   any
	}{
		{"batch_usage_request.json", metering, "BatchUsageEvent", &struct {
			Request []azure.UsageEvent `json:"request"`
		}{}},
		{"batch_usage_response.json", metering, "BatchUsageEventOkResponse", &azure.BatchResult{}},
		{"subscription_response.json", saas, "Subscription", &azure.Subscription{}},
		{"operation_response.json", saas, "SaaSOperation", &azure.Operation{}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			raw, v := readJSON(t, tc.file)
			tc.spec.check(t, tc.schema, v, map[string]any{"$ref": "#/components/schemas/" + tc.schema})
			if err := json.Unmarshal(raw, tc.into); err != nil {
				t.Fatal(err)
			}
			if tc.file == "batch_usage_request.json" {
				// What we send must be exactly the golden request.
				out, _ := json.Marshal(tc.into)
				var a, b any
				json.Unmarshal(out, &a)
				json.Unmarshal(raw, &b)
				if !reflect.DeepEqual(a, b) {
					t.Errorf("we encode\n%s\nwant\n%s", out, raw)
				}
			}
		})
	}
}
