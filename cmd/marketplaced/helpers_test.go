package main

// The helpers the package's tests share: the binary and its processes
// (serve, emulate, demo), requests to the daemon and to the emulators, the
// usage clients that retry until acknowledged, and the emulators' bills.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
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

// runBinary starts cmd and hands each line of its standard output to line,
// in order, from one goroutine. The channel receives cmd.Wait's result
// once the output has ended (Wait must not run before the reads are done).
// Stopping the process is the caller's.
func runBinary(t testing.TB, cmd *exec.Cmd, line func(string)) chan error {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line(sc.Text())
		}
		done <- cmd.Wait()
	}()
	return done
}

var listeningRE = regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)

// startListening runs cmd, a `marketplaced serve`, and waits up to 30 s
// for its first line, "listening on URL". It returns the URL and the
// channel of runBinary. name and logs, which reads the daemon's log, say
// what failed to start; a daemon that does not start in time is killed.
func startListening(t testing.TB, name string, cmd *exec.Cmd, logs func() string) (string, chan error) {
	t.Helper()
	first := make(chan string, 1)
	done := runBinary(t, cmd, func(l string) {
		select {
		case first <- l:
		default:
		}
	})
	select {
	case l := <-first:
		m := listeningRE.FindStringSubmatch(l)
		if m == nil {
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: unexpected first line %q\n%s", name, l, logs())
		}
		return m[1], done
	case err := <-done:
		t.Fatalf("%s exited at start: %v\n%s", name, err, logs())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not start within 30 s\n%s", name, logs())
	}
	return "", nil
}

// daemon is a running `marketplaced serve` (one life, its log in memory).
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
	d := &daemon{cmd: cmd, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cmd.Stderr = lockedWriter{d.mu, d.stderr}
	d.url, d.done = startListening(t, "marketplaced serve", cmd, d.logs)
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
	})
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

// replica is a `marketplaced serve` process across its restarts: one
// address, one data folder, one log file. The replica tests run several on
// one database; the crash test kills and restarts one.
type replica struct {
	name, bin, addr string
	args, env       []string
	log             *os.File

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

func newReplica(t testing.TB, name string, args, env []string) *replica {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // the replica listens there, across its restarts
	r := &replica{name: name, bin: bin, addr: ln.Addr().String(), args: args, env: env, log: log}
	t.Cleanup(func() {
		r.kill()
		log.Close()
	})
	return r
}

func (r *replica) url() string { return "http://" + r.addr }

// data is the replica's data folder, next to its log.
func (r *replica) data() string { return filepath.Join(filepath.Dir(r.log.Name()), r.name) }

// start runs the replica, with extra arguments after its own, and waits
// until it listens.
func (r *replica) start(t testing.TB, extra ...string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	args := append(append([]string{"serve", "-addr", r.addr, "-data", r.data()}, r.args...), extra...)
	cmd := exec.Command(r.bin, args...)
	cmd.Env = append(os.Environ(), append([]string{"MARKETPLACED_API_KEYS=" + serveKey}, r.env...)...)
	cmd.Stderr = r.log
	_, r.done = startListening(t, r.name, cmd, r.logs)
	r.cmd = cmd
}

// kill SIGKILLs the replica, if it runs, and waits until it is gone.
func (r *replica) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	r.cmd = nil
}

// stop sends SIGTERM and returns the exit error (nil for status 0).
func (r *replica) stop(t testing.TB) error {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.cmd = nil
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no exit within 30 s of SIGTERM\n%s", r.name, r.logs())
		return nil
	}
}

// logs is the end of the replica's log, all its lives.
func (r *replica) logs() string {
	b, _ := os.ReadFile(r.log.Name())
	return r.name + ":\n" + lastChars(string(b), 8000)
}

func lastChars(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// freeAddr returns a loopback address that was free a moment ago: the
// emulator must know the daemon's notification URL before the daemon starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	// Below the kernel's ephemeral range: a port from 127.0.0.1:0 can be
	// taken, between this check and the daemon's (re)start, by the source
	// port of any outgoing connection (a long crash run once failed with
	// "bind: address already in use"); one below the range only by
	// another listener that asks for it by number.
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				lo = n
			}
		}
	}
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(lo-10000)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatalf("no free port below the ephemeral range (%d)", lo)
	return ""
}

// startEmulate runs the real `marketplaced emulate` and returns each cloud's
// base URL.
func startEmulate(t *testing.T, args ...string) map[string]string {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"emulate"}, args...)...)
	cmd.Stderr = io.Discard
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	urls := map[string]string{}
	re := regexp.MustCompile(`admin API +(https?://127\.0\.0\.1:\d+)/emulator/`)
	sc := bufio.NewScanner(out)
	var text strings.Builder
	cloud := ""
	for sc.Scan() {
		line := sc.Text()
		text.WriteString(line + "\n")
		for _, c := range []string{"aws", "azure", "gcp"} {
			if strings.Contains(strings.ToLower(line), c) && cloud == "" && !strings.HasPrefix(line, " ") {
				cloud = c
			}
		}
		if m := re.FindStringSubmatch(line); m != nil {
			urls[cloud] = m[1]
			cloud = ""
		}
		if strings.HasPrefix(line, "serving") {
			break
		}
	}
	go io.Copy(io.Discard, out)
	if len(urls) == 0 {
		t.Fatalf("no admin URL in the emulator's output:\n%s", text.String())
	}
	return urls
}

// trustPEM returns an HTTP client that trusts the certificate in file: the
// Azure emulator's (the other emulators are plain HTTP).
func trustPEM(file string) (*http.Client, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// emulatorClient is trustPEM that fails t.
func emulatorClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	c, err := trustPEM(certFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// insecureTransport does not check the server's certificate.
func insecureTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // liveness check of a loopback emulator only
	return tr
}

// getJSON is a request that fails t when the server does not answer or
// out does not decode.
func getJSON(t *testing.T, method, u, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if strings.Contains(u, "/v1/") {
		req.Header.Set("Authorization", "Bearer "+serveKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, u, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// call is a request that returns its transport error instead of failing:
// the daemon may be down. A body starting with "{" is JSON, another a form;
// the daemon's API (/v1/) gets the test's key. out is decoded from a 2xx.
func call(ctx context.Context, c *http.Client, method, u, body string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	switch {
	case strings.HasPrefix(body, "{"):
		req.Header.Set("Content-Type", "application/json")
	case body != "":
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if strings.Contains(u, "/v1/") {
		req.Header.Set("Authorization", "Bearer "+serveKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %s: %w", method, u, b, err)
		}
	}
	return resp.StatusCode, nil
}

// subscriptionStates reads the daemon's subscriptions of provider
// (GET /v1/subscriptions): customer → status.
func subscriptionStates(ctx context.Context, c *http.Client, base, provider string) (map[string]string, error) {
	var page struct {
		Subscriptions []struct {
			Customer string `json:"customer"`
			Status   string `json:"status"`
		} `json:"subscriptions"`
	}
	if st, err := call(ctx, c, "GET", base+"/v1/subscriptions?provider="+url.QueryEscape(provider), "", &page); err != nil || st != 200 {
		return nil, fmt.Errorf("GET /v1/subscriptions?provider=%s: %d %v", provider, st, err)
	}
	m := map[string]string{}
	for _, s := range page.Subscriptions {
		m[s.Customer] = s.Status
	}
	return m, nil
}

// post sends a usage batch to base; key, when set, is its Idempotency-Key.
// It returns the status and Retry-After, or the transport error.
func post(ctx context.Context, c *http.Client, base, key string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/v1/usage", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+serveKey)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), nil
}

// usageRecord is a record of POST /v1/usage.
type usageRecord struct {
	EventID  string `json:"event_id,omitempty"`
	Provider string `json:"provider"`
	Customer string `json:"customer"`
	Metric   string `json:"metric"`
	Quantity int64  `json:"quantity"`
	Time     string `json:"time,omitempty"`
}

func usageBody(recs []usageRecord) []byte {
	b, _ := json.Marshal(map[string]any{"records": recs})
	return b
}

// ingestUntilAcked posts a usage batch until a daemon acknowledges it
// (200), as a client that retries does: the same body each time, so that
// its event ids or Idempotency-Key (key) make a retry of a committed batch
// count once. to(try) is the daemon of each try. What the daemon may
// answer while it is down or busy (no answer, 503, 429) is retried every
// 50 ms, up to maxTries times (0: until ctx ends); any other answer is an
// error. It returns the number of retries.
func ingestUntilAcked(ctx context.Context, c *http.Client, to func(try int) string, key string, body []byte, maxTries int) (int, error) {
	for try := 0; ; try++ {
		st, _, err := post(ctx, c, to(try), key, body)
		switch {
		case err == nil && st == 200:
			return try, nil
		case err == nil && st != 503 && st != 429:
			return try, fmt.Errorf("POST /v1/usage to %s: %d", to(try), st)
		case maxTries > 0 && try+1 >= maxTries:
			return try, fmt.Errorf("POST /v1/usage: not acknowledged after %d tries: %d %v", try+1, st, err)
		}
		select {
		case <-ctx.Done():
			return try, fmt.Errorf("POST /v1/usage: not acknowledged (last: %d %v): %w", st, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readBill reads an emulator's bill (GET /emulator/bill at its admin URL).
func readBill(ctx context.Context, c *http.Client, adminURL string) (admin.Bill, error) {
	var b admin.Bill
	if st, err := call(ctx, c, "GET", adminURL+"/emulator/bill", "", &b); err != nil || st != 200 {
		return b, fmt.Errorf("GET %s/emulator/bill: %d %v", adminURL, st, err)
	}
	return b, nil
}

// perBuyer sums a bill's quantities by buyer.
func perBuyer(b admin.Bill) map[string]float64 {
	m := map[string]float64{}
	for _, l := range b.Lines {
		m[l.Buyer] += l.Quantity
	}
	return m
}

// total sums the quantities of a map by buyer.
func total(m map[string]float64) (n float64) {
	for _, q := range m {
		n += q
	}
	return n
}

// settledBills waits, up to within, until each cloud's bill reaches the
// usage acknowledged for it (cloud → buyer → quantity), then 3 s more, in
// which nothing more may arrive, and returns each cloud's bill. emu and
// clients are each cloud's emulator admin URL and the client for it.
func settledBills(t *testing.T, emu map[string]string, clients map[string]*http.Client, acked map[string]map[string]float64, within time.Duration) map[string]admin.Bill {
	t.Helper()
	bills := func() map[string]admin.Bill {
		out := map[string]admin.Bill{}
		for cloud := range acked {
			b, err := readBill(t.Context(), clients[cloud], emu[cloud])
			if err != nil {
				t.Fatalf("%s bill: %v", cloud, err)
			}
			out[cloud] = b
		}
		return out
	}
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		got, reached := bills(), true
		for cloud, want := range acked {
			reached = reached && total(perBuyer(got[cloud])) >= total(want)
		}
		if reached {
			break
		}
	}
	time.Sleep(3 * time.Second) // nothing more may arrive
	return bills()
}

// landBuyer makes a buyer on the emulator of cloud (aws or gcp) at emuURL,
// with request the emulator's new-buyer body, and lands it on the daemon d
// as the cloud's registration redirect would.
func landBuyer(t *testing.T, cloud, emuURL, request string, d *daemon) admin.Buyer {
	t.Helper()
	field := map[string]string{"aws": "x-amzn-marketplace-token", "gcp": "x-gcp-marketplace-token"}[cloud]
	var buyer admin.Buyer
	if st := getJSON(t, "POST", emuURL+"/emulator/buyers", request, &buyer); st != 201 || buyer.Token == "" {
		t.Fatalf("new %s buyer: %d %+v", cloud, st, buyer)
	}
	resp, err := http.PostForm(d.url+"/"+cloud+"/landing", url.Values{field: {buyer.Token}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("%s landing: %d %s\n%s", cloud, resp.StatusCode, body, d.logs())
	}
	return buyer
}
