package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const serveKey = "binary-test-key-0123456789"

// binary builds marketplaced once per test run.
var binary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "marketplaced-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "marketplaced")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

// daemon is a running `marketplaced serve`.
type daemon struct {
	cmd    *exec.Cmd
	url    string
	stderr *bytes.Buffer
	mu     *sync.Mutex
	done   chan error
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startServe runs the real binary on a free loopback port with the test
// catalogue and waits for it to print its address.
func startServe(t *testing.T, args ...string) *daemon {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"serve", "-addr", "127.0.0.1:0", "-data", t.TempDir(),
		"-catalogue", filepath.Join("..", "..", "server", "testdata", "catalogue.json")}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "MARKETPLACED_API_KEYS="+serveKey)
	d := &daemon{cmd: cmd, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	cmd.Stderr = lockedWriter{d.mu, d.stderr}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-lines:
		m := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected first line %q", line)
		}
		d.url = m[1]
	case err := <-d.done:
		t.Fatalf("marketplaced serve exited: %v\n%s", err, d.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("marketplaced serve did not start\n%s", d.logs())
	}
	return d
}

// stop sends SIGTERM and returns the exit error (nil for status 0).
func (d *daemon) stop(t *testing.T, within time.Duration) error {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		return err
	case <-time.After(within):
		t.Fatalf("no exit within %v of SIGTERM\n%s", within, d.logs())
		return nil
	}
}

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
