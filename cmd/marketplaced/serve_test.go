package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeBinary(t *testing.T) {
	d := startServe(t, "-shutdown-timeout", "5s")
	post := func(body string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", d.url+"/v1/usage", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+serveKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := post(`{"records":[{"event_id":"b1","provider":"aws","customer":"c","metric":"tokens","quantity":5}]}`); st != 200 || !strings.Contains(body, `"accepted":1`) {
		t.Fatalf("POST /v1/usage: %d %s", st, body)
	}
	resp, err := http.Get(d.url + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	began := time.Now()
	if err := d.stop(t, 10*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", err, d.logs())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(began))
	logs := d.logs()
	if strings.Contains(logs, serveKey) {
		t.Fatal("the API key appears in the logs")
	}
	for line := range strings.SplitSeq(strings.TrimSpace(logs), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Fatalf("log line is not JSON: %s", line)
		}
	}
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Fatalf("no clean stop in the logs:\n%s", logs)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-catalogue", filepath.Join("..", "..", "server", "testdata", "catalogue.json"), "-read-timeout", "soon")
	cmd.Env = append(os.Environ(), "MARKETPLACED_API_KEYS=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2\n%s", err, out)
	}
	for _, want := range []string{"setting -api-keys / MARKETPLACED_API_KEYS: is required", `setting -read-timeout: want a positive duration such as 30s, got "soon"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	help, err := exec.Command(bin, "serve", "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(help), "-shutdown-timeout") || !strings.Contains(string(help), "MARKETPLACED_API_KEYS") {
		t.Fatalf("serve -h: %v\n%s", err, help)
	}
}

// TestClientExamples runs docs/api.md's Python and Node clients against the
// real binary. Without python3 or node it skips, except under CI, where it
// fails.
func TestClientExamples(t *testing.T) {
	api, err := os.ReadFile(filepath.Join("..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	d := startServe(t)
	for _, c := range []struct{ tool, file string }{{"python3", "client.py"}, {"node", "client.mjs"}} {
		t.Run(c.tool, func(t *testing.T) {
			tool, path := docExample(t, api, c.tool, c.file)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, tool, path)
			cmd.Env = append(os.Environ(), "MARKETPLACED_URL="+d.url, "MARKETPLACED_API_KEY="+serveKey)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", c.tool, c.file, err, out)
			}
			for _, want := range []string{`"accepted": 2`, `"duplicates": 2`, "refused: 400 metric", "no_active_subscription", "usage: 2000"} {
				norm := strings.ReplaceAll(string(out), `":`, `": `) // node prints compact JSON
				norm = strings.ReplaceAll(norm, `":  `, `": `)
				norm = strings.ReplaceAll(norm, `'`, `"`) // python prints dicts
				if !strings.Contains(norm, want) {
					t.Errorf("output lacks %s:\n%s", want, out)
				}
			}
		})
	}
}

// docExample returns the interpreter and the path of docs/examples/file,
// after checking that docs/api.md (api) shows the file verbatim, so that the
// page cannot drift from what runs. Without the interpreter it skips, except
// under CI, where it fails.
func docExample(t *testing.T, api []byte, interpreter, file string) (tool, path string) {
	t.Helper()
	path = filepath.Join("..", "..", "docs", "examples", file)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(api, src) {
		t.Fatalf("docs/api.md does not show docs/examples/%s verbatim", file)
	}
	tool, err = exec.LookPath(interpreter)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is needed for this test: %v", interpreter, err)
		}
		t.Skipf("%s not installed", interpreter)
	}
	return tool, path
}
