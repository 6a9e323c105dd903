package gcp_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// specDir holds the repository's copy of the discovery documents the
// official clients are generated from (kept equal to ../shared/specs by the
// root package's TestSpecCopiesAreCurrent).
const specDir = "../specs/gcp"

type discovery struct {
	Schemas map[string]schema `json:"schemas"`
}

type schema struct {
	Type                 string            `json:"type"`
	Format               string            `json:"format"`
	Ref                  string            `json:"$ref"`
	Enum                 []string          `json:"enum"`
	Properties           map[string]schema `json:"properties"`
	Items                *schema           `json:"items"`
	AdditionalProperties *schema           `json:"additionalProperties"`
}

func loadSpec(t *testing.T, file string) discovery {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(specDir, file))
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	var d discovery
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("parse spec %s: %v", file, err)
	}
	return d
}

func specEnum(t *testing.T, file, def, field string) []string {
	t.Helper()
	return loadSpec(t, file).Schemas[def].Properties[field].Enum
}

// conform checks that v (decoded JSON) has only fields of the schema def,
// each of the type the spec gives it (int64 as a decimal string,
// google-datetime as RFC 3339, enums from the list).
func conform(errs *[]string, d discovery, where string, v any, s schema) {
	fail := func(format string, args ...any) { *errs = append(*errs, fmt.Sprintf(format, args...)) }
	if s.Ref != "" {
		rs, ok := d.Schemas[s.Ref]
		if !ok {
			fail("%s: spec has no schema %s", where, s.Ref)
			return
		}
		s = rs
	}
	switch s.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			fail("%s: %T, want an object", where, v)
			return
		}
		for k, fv := range m {
			if ps, ok := s.Properties[k]; ok {
				conform(errs, d, where+"."+k, fv, ps)
			} else if s.AdditionalProperties != nil {
				conform(errs, d, where+"."+k, fv, *s.AdditionalProperties)
			} else {
				fail("%s: field %q is not in the spec", where, k)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			fail("%s: %T, want an array", where, v)
			return
		}
		for i, x := range a {
			conform(errs, d, where+"["+strconv.Itoa(i)+"]", x, *s.Items)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			fail("%s: %T, want a string", where, v)
			return
		}
		switch s.Format {
		case "int64", "uint64":
			if _, err := strconv.ParseInt(str, 10, 64); err != nil {
				fail("%s: %q is not an int64 string", where, str)
			}
		case "google-datetime":
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil || !strings.HasSuffix(str, "Z") {
				fail("%s: %q is not an RFC 3339 UTC time", where, str)
			}
		}
		if len(s.Enum) > 0 && !contains(s.Enum, str) {
			fail("%s: %q is not one of %v", where, str, s.Enum)
		}
	case "integer", "number":
		if _, ok := v.(float64); !ok {
			fail("%s: %T, want a number", where, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("%s: %T, want a boolean", where, v)
		}
	case "any", "":
	default:
		fail("%s: unknown spec type %q", where, s.Type)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// conformJSON decodes b and checks it against def.
func conformJSON(t *testing.T, file, def, name string, b []byte) {
	t.Helper()
	d := loadSpec(t, file)
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if _, ok := d.Schemas[def]; !ok {
		t.Fatalf("spec %s has no schema %s", file, def)
	}
	var errs []string
	conform(&errs, d, name, v, schema{Ref: def})
	for _, e := range errs {
		t.Error(e)
	}
}

// TestConformCatchesBadPayloads proves the spec check can fail.
func TestConformCatchesBadPayloads(t *testing.T) {
	d := loadSpec(t, "servicecontrol-api.json")
	bad := map[string]string{
		"unknown field":    `{"operations":[{"operationID":"x"}]}`,
		"int64 as number":  `{"operations":[{"metricValueSets":[{"metricValues":[{"int64Value":5}]}]}]}`,
		"local time":       `{"operations":[{"startTime":"2026-03-10T10:00:00+01:00"}]}`,
		"wrong array type": `{"operations":{"operationId":"x"}}`,
	}
	for name, body := range bad {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		var errs []string
		conform(&errs, d, name, v, schema{Ref: "ReportRequest"})
		if len(errs) == 0 {
			t.Errorf("%s: accepted %s", name, body)
		}
	}
}
