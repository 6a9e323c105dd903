package main

import (
	"bytes"
	"encoding/json"
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

// TestDemo runs the real `marketplaced demo` with a temporary data folder,
// as README's first command does: each cloud's emulator bills usage within
// three minutes, the dashboard and the API answer with the printed key, and
// SIGINT (Ctrl-C) stops it with exit status 0.
func TestDemo(t *testing.T) {
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "demo-data")
	const key = "demo-test-key-0123456789"
	cmd := exec.Command(bin, "demo", "-data", data, "-addr", "127.0.0.1:0", "-api-key", key)
	var stderr bytes.Buffer
	var mu sync.Mutex
	cmd.Stderr = lockedWriter{&mu, &stderr}
	var out lockedBuffer
	done := runBinary(t, cmd, out.WriteLine)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})
	logs := func() string {
		b, _ := os.ReadFile(filepath.Join(data, "marketplaced.log"))
		mu.Lock()
		defer mu.Unlock()
		return "stdout:\n" + out.String() + "\nstderr:\n" + stderr.String() + "\nlog (tail):\n" + lastChars(string(b), 4000)
	}

	// The start: the dashboard's URL and each emulator's admin API.
	var dashboard string
	emulators := map[string]string{}
	re := regexp.MustCompile(`(\w+) emulator, admin API (https?://127\.0\.0\.1:\d+)/emulator/`)
	deadline := time.Now().Add(30 * time.Second)
	for dashboard == "" || len(emulators) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not print its dashboard and emulators within 30 s\n%s", logs())
		}
		time.Sleep(100 * time.Millisecond)
		text := out.String()
		if m := regexp.MustCompile(`dashboard +(http://127\.0\.0\.1:\d+/dashboard/)`).FindStringSubmatch(text); m != nil {
			dashboard = m[1]
		}
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			emulators[m[1]] = m[2]
		}
	}
	daemon := strings.TrimSuffix(dashboard, "/dashboard/")
	azClient, err := trustPEM(filepath.Join(data, "azure-emulator-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*http.Client{"AWS": http.DefaultClient, "Azure": azClient, "Google": http.DefaultClient}

	// Each cloud's emulator bills usage: the buyer subscribed through the
	// landing page, usage went in through the API, the hour ended on the
	// fast clock, was sealed and reported.
	billed := map[string]float64{}
	deadline = time.Now().Add(3 * time.Minute)
	said := func() bool {
		for cloud := range emulators {
			if !strings.Contains(out.String(), "billed on "+cloud+": ") {
				return false
			}
		}
		return true
	}
	for len(billed) < 3 || !said() {
		if time.Now().After(deadline) {
			t.Fatalf("after 3 minutes billed %v; the output says:\n%s", billed, logs())
		}
		time.Sleep(2 * time.Second)
		clear(billed)
		for cloud, base := range emulators {
			bill, err := readBill(t.Context(), clients[cloud], base)
			if err != nil {
				t.Fatalf("%s bill: %v", cloud, err)
			}
			for _, l := range bill.Lines {
				if l.Quantity > 0 {
					billed[cloud] += l.Quantity
				}
			}
		}
	}
	for _, cloud := range []string{"AWS", "Azure", "Google"} {
		if billed[cloud] <= 0 {
			t.Errorf("%s: billed %v", cloud, billed[cloud])
		}
	}
	for _, want := range []string{"AWS     buyer ", "Azure   buyer ", "Google  buyer ", "counted once"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output does not say %q:\n%s", want, out.String())
		}
	}

	// Then a lifecycle change on each cloud, through its notifications: a
	// second AWS buyer leaves (EventBridge) and is billed at once; the
	// Azure buyer changes plan (webhook).
	leaver := ""
	deadline = time.Now().Add(90 * time.Second)
	for {
		text := out.String()
		if m := regexp.MustCompile(`AWS +buyer (\S+) agreement ended`).FindStringSubmatch(text); m != nil {
			leaver = m[1]
		}
		if leaver != "" && strings.Contains(text, "billed on AWS: ") && regexp.MustCompile(`billed on AWS: \d+ tokens_1m for `+regexp.QuoteMeta(leaver)+`,`).MatchString(text) &&
			regexp.MustCompile(`Azure +buyer \S+ changed plan to pro`).MatchString(text) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lifecycle changes within 90 s of the first bills\n%s", logs())
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The API answers with the printed key: four active subscriptions (the
	// AWS buyer who left stays active for AWS's final hour of metering).
	req, _ := http.NewRequestWithContext(t.Context(), "GET", daemon+"/v1/subscriptions?state=active", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Subscriptions []struct {
			Provider string `json:"provider"`
		} `json:"subscriptions"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || len(page.Subscriptions) != 4 {
		t.Errorf("active subscriptions: %v %+v", err, page)
	}
	if resp, err := http.Get(dashboard); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("dashboard: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Ctrl-C: a clean stop, exit status 0.
	stopped := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", err, logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the demo did not stop within 30 s of SIGINT\n%s", logs())
	}
	t.Logf("stopped in %s after SIGINT", time.Since(stopped).Round(time.Millisecond))
	if !strings.Contains(out.String(), "marketplaced demo: stopped") {
		t.Errorf("no stop line:\n%s", out.String())
	}
}

// TestDemoData: the demo starts its own folder over, and refuses one that
// holds another daemon's store.
func TestDemoData(t *testing.T) {
	dir := t.TempDir()
	if restarted, err := prepareDemoData(dir); err != nil || restarted {
		t.Fatalf("new folder: %v %v", restarted, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "marketplace.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if restarted, err := prepareDemoData(dir); err != nil || !restarted {
		t.Fatalf("the demo's folder again: %v %v", restarted, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "marketplace.db")); !os.IsNotExist(err) {
		t.Errorf("the previous demo's store is still there: %v", err)
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "marketplace.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareDemoData(other); err == nil || !strings.Contains(err.Error(), "-data") {
		t.Errorf("a serve data folder: %v, want an error naming -data", err)
	}
	if b, err := os.ReadFile(filepath.Join(other, "marketplace.db")); err != nil || string(b) != "x" {
		t.Errorf("another daemon's store was touched: %q %v", b, err)
	}
}

// TestDemoFlags: bad flags are refused, naming what is wrong.
func TestDemoFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "-api-key", "short"}, "-api-key"},
		{[]string{"demo", "extra"}, "extra"},
		{[]string{"demo", "-addr", "nohost", "-data", t.TempDir()}, "-addr"},
	} {
		var buf bytes.Buffer
		err := run(t.Context(), tc.args, &buf, &buf)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// lockedBuffer collects a process's output lines while a test reads them.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) WriteLine(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s + "\n")
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
