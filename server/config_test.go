package server

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

const catalogueFile = "testdata/catalogue.json"

func TestParseConfigDefaultsAndPrecedence(t *testing.T) {
	c, err := ParseConfig([]string{"-catalogue", catalogueFile}, env(map[string]string{
		"MARKETPLACED_API_KEYS":         " key-aaaaaaaaaaaaaaaa , key-bbbbbbbbbbbbbbbb ",
		"MARKETPLACED_ADDR":             "127.0.0.1:9999",
		"MARKETPLACED_SHUTDOWN_TIMEOUT": "3s",
		"MARKETPLACED_CATALOGUE":        "ignored-because-the-flag-wins.json",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9999" || c.ShutdownTimeout != 3*time.Second || len(c.APIKeys) != 2 || c.APIKeys[1] != "key-bbbbbbbbbbbbbbbb" {
		t.Fatalf("from the environment: %+v", c)
	}
	if c.CataloguePath != catalogueFile || c.Catalogue == nil {
		t.Fatalf("the flag should win over the environment: %q", c.CataloguePath)
	}
	if c.DataDir != "marketplaced-data" || c.DBPath() != filepath.Join("marketplaced-data", "marketplace.db") || c.MaxRecords != 10000 ||
		c.MaxInFlight != 64 || c.ReadHeaderTimeout != 5*time.Second || c.WriteTimeout != 30*time.Second || c.IdleTimeout != 2*time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestParseConfigErrorsNameTheSetting(t *testing.T) {
	base := map[string]string{"MARKETPLACED_API_KEYS": "key-aaaaaaaaaaaaaaaa", "MARKETPLACED_CATALOGUE": catalogueFile}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no api key", nil, map[string]string{"MARKETPLACED_API_KEYS": ""}, "setting -api-keys / MARKETPLACED_API_KEYS: is required"},
		{"short api key", nil, map[string]string{"MARKETPLACED_API_KEYS": "key-aaaaaaaaaaaaaaaa,short"}, "MARKETPLACED_API_KEYS: key 2 is shorter than 16"},
		{"no catalogue", nil, map[string]string{"MARKETPLACED_CATALOGUE": ""}, "setting -catalogue / MARKETPLACED_CATALOGUE: is required"},
		{"missing catalogue", []string{"-catalogue", "testdata/nope.json"}, nil, "setting -catalogue: catalogue: open testdata/nope.json"},
		{"bad duration env", nil, map[string]string{"MARKETPLACED_READ_TIMEOUT": "soon"}, `setting MARKETPLACED_READ_TIMEOUT: want a positive duration such as 30s, got "soon"`},
		{"bad duration flag", []string{"-shutdown-timeout", "-1s"}, nil, `setting -shutdown-timeout: want a positive duration`},
		{"bad int", []string{"-max-records", "many"}, nil, `setting -max-records: want a positive integer, got "many"`},
		{"small body", []string{"-max-body", "10"}, nil, `setting -max-body: want a number of bytes, at least 1024`},
		{"bad addr", []string{"-addr", "8080"}, nil, `setting -addr: want host:port`},
		{"bad level", []string{"-log-level", "loud"}, nil, `setting -log-level:`},
		{"extra argument", []string{"now"}, nil, `unexpected argument "now"`},
		{"aws setting without product code", []string{"-aws-license-mode", "true"}, nil, "setting -aws-product-code / MARKETPLACED_AWS_PRODUCT_CODE: is required for AWS (-aws-license-mode is set)"},
		{"aws product not in catalogue", []string{"-aws-product-code", "prod-other", "-aws-region", "us-east-1"}, nil, `product "prod-other" is not an aws product of the catalogue`},
		{"aws without region", []string{"-aws-product-code", "prod-inference"}, nil, "setting -aws-region / MARKETPLACED_AWS_REGION: is required for AWS"},
		{"aws bad queue", []string{"-aws-product-code", "prod-inference", "-aws-region", "eu-west-1", "-aws-sqs-queue-url", "queue"}, nil, "setting -aws-sqs-queue-url / MARKETPLACED_AWS_SQS_QUEUE_URL: want the queue's URL"},
		{"gcp setting without service", nil, map[string]string{"MARKETPLACED_GCP_PROVIDER_ID": "p"}, "setting -gcp-service / MARKETPLACED_GCP_SERVICE: is required for Google (MARKETPLACED_GCP_PROVIDER_ID is set)"},
		{"gcp without provider id", []string{"-gcp-service", "inference.endpoints.example-project.cloud.goog", "-gcp-signup-audience", "a"}, nil, "setting -gcp-provider-id / MARKETPLACED_GCP_PROVIDER_ID: is required for Google"},
		{"gcp bad subscription", []string{"-gcp-pubsub-subscription", "sub"}, nil, "setting -gcp-pubsub-subscription: want projects/PROJECT/subscriptions/NAME"},
		{"gcp emulator not loopback", []string{"-gcp-emulator-url", "http://10.0.0.1:80"}, nil, "setting -gcp-emulator-url: want a loopback"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := map[string]string{}
			for k, v := range base {
				e[k] = v
			}
			for k, v := range c.env {
				e[k] = v
			}
			_, err := ParseConfig(c.args, env(e), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// TestSecretsNeverEchoed: a key is not in -h, not in a validation error, not
// in the config's log value.
func TestSecretsNeverEchoed(t *testing.T) {
	const secret = "sup3r-secret-key-value"
	var out bytes.Buffer
	_, err := ParseConfig([]string{"-h"}, env(map[string]string{"MARKETPLACED_API_KEYS": secret}), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if strings.Contains(out.String(), secret) {
		t.Fatal("-h shows the API key")
	}
	_, err = ParseConfig(nil, env(map[string]string{"MARKETPLACED_API_KEYS": secret + ",tiny"}), &out)
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "tiny") {
		t.Fatalf("error echoes a key: %v", err)
	}
	c, err := ParseConfig(nil, env(map[string]string{"MARKETPLACED_API_KEYS": secret, "MARKETPLACED_CATALOGUE": catalogueFile,
		"MARKETPLACED_AZURE_TENANT_ID": "tenant", "MARKETPLACED_AZURE_APP_ID": "app", "MARKETPLACED_AZURE_CLIENT_SECRET": secret,
		"MARKETPLACED_AWS_PRODUCT_CODE": "prod-inference", "MARKETPLACED_AWS_REGION": "us-east-1", "MARKETPLACED_AWS_EVENTBRIDGE_SECRET": secret}), &out)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.LogValue().String(); strings.Contains(v, secret) || !strings.Contains(v, "api_keys=1") || !strings.Contains(v, "client_secret_set=true") {
		t.Fatalf("log value %s", v)
	}
}

// TestEverySettingDocumented: -h and docs/configuration.md list every flag,
// its environment variable and its default.
func TestEverySettingDocumented(t *testing.T) {
	var help bytes.Buffer
	if _, err := ParseConfig([]string{"-h"}, env(nil), &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings() {
		for _, want := range []string{"-" + s.flag, envName(s.flag)} {
			if !strings.Contains(help.String(), want) {
				t.Errorf("-h lacks %s", want)
			}
		}
		row := "| `-" + s.flag + "` | `" + envName(s.flag) + "` | "
		if s.def != "" {
			row += "`" + s.def + "`"
		}
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/configuration.md lacks the row starting %q", row)
		}
	}
}

func TestCatalogueValidation(t *testing.T) {
	cases := []struct {
		name, json, want string
	}{
		{"empty", `{"products":[]}`, "products: at least one product"},
		{"unknown field", `{"products":[],"dimensions":{}}`, `unknown field "dimensions"`},
		{"bad provider", `{"products":[{"provider":"ibm","product":"p","metrics":{"m":{"dimension":"d"}}}]}`, `products[0].provider: "ibm" is not one of`},
		{"no product", `{"products":[{"provider":"aws","metrics":{"m":{"dimension":"d"}}}]}`, "products[0].product: is empty"},
		{"twice", `{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d"}}},{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d"}}}]}`, "products[1]: product aws/p is listed twice (also products[0])"},
		{"no metrics", `{"products":[{"provider":"aws","product":"p"}]}`, "products[0].metrics: at least one metric"},
		{"no dimension", `{"products":[{"provider":"aws","product":"p","metrics":{"m":{}}}]}`, "products[0].metrics.m.dimension: is empty"},
		{"aws dimension", `{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"tokens/1m"}}}]}`, `products[0].metrics.m.dimension: AWS dimension "tokens/1m"`},
		{"gcp metric", `{"products":[{"provider":"gcp","product":"p","metrics":{"m":{"dimension":"tokens"}}}]}`, `Google metric "tokens": want the full name`},
		{"negative unit", `{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d","unit":-5}}}]}`, "products[0].metrics.m.unit: must be 1 or more"},
		{"space in metric", `{"products":[{"provider":"aws","product":"p","metrics":{"my metric":{"dimension":"d"}}}]}`, "has a space"},
		{"unit clash", `{"products":[{"provider":"aws","product":"p","metrics":{"m":{"dimension":"d","unit":10}}},{"provider":"aws","product":"q","metrics":{"m":{"dimension":"d","unit":100}}}]}`,
			`products[1].metrics.m.unit: aws dimension "d" has unit 100 here but 10 in products[0].metrics.m`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseCatalogue([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestCatalogueResolve(t *testing.T) {
	cat, err := ParseCatalogue([]byte(`{"products":[
		{"provider":"aws","product":"small","metrics":{"tokens":{"dimension":"tokens_1m","unit":1000000},"seats":{"dimension":"seats_small"}}},
		{"provider":"aws","product":"large","metrics":{"tokens":{"dimension":"tokens_1m","unit":1000000},"seats":{"dimension":"seats_large"}}},
		{"provider":"azure","product":"offer","metrics":{"tokens":{"dimension":"tokens_meter"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		provider, product, metric string
		want, field               string
	}{
		{"aws", "", "tokens", "tokens_1m", ""}, // both products agree
		{"aws", "large", "seats", "seats_large", ""},
		{"aws", "", "seats", "", "product"}, // ambiguous
		{"aws", "medium", "seats", "", "product"},
		{"aws", "small", "gpu", "", "metric"},
		{"azure", "", "tokens", "tokens_meter", ""},
		{"gcp", "", "tokens", "", "provider"},
	}
	for _, c := range cases {
		got, err := cat.Resolve(marketplace.CloudProvider(c.provider), c.product, c.metric)
		var re *errResolve
		if c.field != "" {
			if !errors.As(err, &re) || re.field != c.field {
				t.Errorf("Resolve(%s,%s,%s): %v, want an error on %s", c.provider, c.product, c.metric, err, c.field)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Resolve(%s,%s,%s) = %q, %v; want %q", c.provider, c.product, c.metric, got, err, c.want)
		}
	}
	if u := cat.Units(); u["aws/tokens_1m"] != 1_000_000 || u["aws/seats_small"] != 1 || u["azure/tokens_meter"] != 1 {
		t.Fatalf("Units() = %v", u)
	}
}
