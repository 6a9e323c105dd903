package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace/emulator/admin"
)

// TestEmulate runs `marketplaced emulate` with all three emulators on free
// loopback ports and a fault flag of the shared naming scheme, waits for
// it to print their admin URLs, drives each through the same admin API
// (create a buyer, send it a lifecycle event, read the bill, read and set
// the faults), and stops it by cancelling its context.
func TestEmulate(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"emulate", "-aws-listen", "127.0.0.1:0", "-azure-listen", "127.0.0.1:0", "-gcp-listen", "127.0.0.1:0",
			"-azure-cert-file", t.TempDir() + "/cert.pem", "-aws-drop-rate", "0.5", "-azure-error-rate", "0.25", "-gcp-throttle-tps", "5"}, pw, io.Discard)
		pw.Close()
	}()
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "serving") {
			break
		}
	}
	go io.Copy(io.Discard, pr) // keep the writer unblocked
	text := out.String()
	urls := regexp.MustCompile(`admin API +(https?://127\.0\.0\.1:\d+)/emulator/`).FindAllStringSubmatch(text, -1)
	if len(urls) != 3 {
		t.Fatalf("want 3 admin URLs in the output, got %q\n%s", urls, text)
	}
	// The Azure emulator serves TLS with its own certificate: this test
	// does not check it (helpers_test.go's insecureTransport).
	client := &http.Client{Timeout: 5 * time.Second, Transport: insecureTransport()}
	call := func(method, url, body string, out any) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
		return resp.StatusCode
	}
	for i, c := range []struct {
		cloud, buyer, event string
		faults              admin.Faults
	}{
		{"aws", `{"product":"prod-demo"}`, `{"event":"unsubscribe-pending"}`, admin.Faults{DropRate: 0.5}},
		{"azure", `{"plan":"basic","active":true}`, `{"event":"Suspend"}`, admin.Faults{ErrorRate: 0.25}},
		{"gcp", `{"product":"demo","plan":"standard","active":true}`, `{"event":"cancelAtTermEnd"}`, admin.Faults{ThrottleTPS: 5}},
	} {
		base := urls[i][1] + "/emulator"
		var b admin.Buyer
		if st := call("POST", base+"/buyers", c.buyer, &b); st != 201 || b.ID == "" || b.Token == "" {
			t.Errorf("%s: new buyer: %d %+v", c.cloud, st, b)
			continue
		}
		var ev admin.EventResult
		if st := call("POST", base+"/buyers/"+b.ID+"/events", c.event, &ev); st != 200 || ev.Buyer.State == b.State {
			t.Errorf("%s: event: %d %+v (before: %s)", c.cloud, st, ev, b.State)
		}
		var bill admin.Bill
		if st := call("GET", base+"/bill", "", &bill); st != 200 || bill.Lines == nil || bill.Totals == nil {
			t.Errorf("%s: bill: %d %+v", c.cloud, st, bill)
		}
		var f admin.Faults
		c.faults.Scope = admin.ScopeMetering
		if c.cloud != "aws" { // AWS's throttling has no Retry-After
			c.faults.RetryAfter = admin.Duration(time.Second)
		}
		if call("GET", base+"/faults", "", &f); f != c.faults {
			t.Errorf("%s: faults from the flags: %+v, want %+v", c.cloud, f, c.faults)
		}
		if st := call("PUT", base+"/faults", `{"throttleRate":0.5,"scope":"all"}`, &f); st != 200 || f.ThrottleRate != 0.5 || f.Scope != "all" || f.ErrorRate != 0 {
			t.Errorf("%s: set faults: %d %+v", c.cloud, st, f)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("emulate returned %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("emulate did not stop after its context was cancelled")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"emulate", "-clouds", "none"}, {"emulate", "-no-such-flag"}, {"emulate", "-aws-error-rate", "2"}} {
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}

// TestHelp: -h succeeds everywhere; marketplaced -h lists the subcommands
// and emulate -h the flags of the shared naming scheme.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"emulate"}},
		{[]string{"help"}, []string{"emulate"}},
		{[]string{"emulate", "-h"}, []string{"docs/emulators.md", "-aws-throttle-rate", "-azure-throttle-tps", "-gcp-fault-scope", "-azure-patch-delay", "-aws-dimensions", "-azure-dimensions"}},
	} {
		var out bytes.Buffer
		if err := run(t.Context(), tc.args, &out, &out); err != nil {
			t.Errorf("run(%q): %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("run(%q) does not mention %s:\n%s", tc.args, w, out.String())
			}
		}
	}
}
