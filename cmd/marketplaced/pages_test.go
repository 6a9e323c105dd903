package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServePages: `serve -pages DIR` answers buyers with the seller's
// templates, and a broken template stops it at start, naming the file.
func TestServePages(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "error.html"), []byte(`{{define "title"}}Acme: {{.Title}}{{end}}{{define "content"}}<h1>Acme Inference</h1><p>{{.Detail}}</p><p>Write to help@acme.example, quoting {{.RequestID}}.</p>{{end}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_REGION", "us-east-1")
	d := startServe(t, "-aws-product-code", "prod-inference", "-pages", dir)
	// A bookmark of the landing URL (a GET): answered before AWS is asked.
	resp, err := http.Get(d.url + "/aws/landing")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(body), "<h1>Acme Inference</h1>") ||
		!strings.Contains(string(body), "help@acme.example, quoting "+resp.Header.Get("X-Request-Id")) {
		t.Errorf("landing with the seller's error.html: %d\n%s", resp.StatusCode, body)
	}

	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "landing.html"), []byte(`{{define "content"}}{{.Product`), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-catalogue", filepath.Join("..", "..", "server", "testdata", "catalogue.json"), "-pages", broken)
	cmd.Env = append(os.Environ(), "MARKETPLACED_API_KEYS="+serveKey)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "setting -pages") || !strings.Contains(string(out), "landing.html") {
		t.Errorf("a broken template: %v\n%s", err, out)
	}
}
