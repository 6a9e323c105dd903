package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestEmulate runs `marketplaced emulate` with all three emulators on free
// loopback ports, waits for it to print their base URLs, asks each for its
// bill over HTTP, and stops it by cancelling its context.
func TestEmulate(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"emulate", "-aws-listen", "127.0.0.1:0", "-azure-listen", "127.0.0.1:0", "-gcp-listen", "127.0.0.1:0",
			"-azure-cert-file", t.TempDir() + "/cert.pem", "-aws-drop-rate", "0.5"}, pw, io.Discard)
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
	for _, cloud := range []string{"aws", "azure", "gcp"} {
		if !strings.Contains(text, cloud+" emulator\n") {
			t.Errorf("no %s emulator in the output:\n%s", cloud, text)
		}
	}
	// Every emulator's bill answers JSON (the Azure one over TLS: skip its
	// certificate, this is only a liveness check).
	urls := regexp.MustCompile(`https?://127\.0\.0\.1:\d+/emulator/bill`).FindAllString(text, -1)
	if len(urls) != 3 {
		t.Fatalf("want 3 bill URLs in the output, got %q\n%s", urls, text)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: insecureTransport()}
	for _, u := range urls {
		resp, err := client.Get(u)
		if err != nil {
			t.Errorf("GET %s: %v", u, err)
			continue
		}
		var v any
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Errorf("GET %s: %d, %v", u, resp.StatusCode, err)
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
	for _, args := range [][]string{nil, {"bogus"}, {"emulate", "-clouds", "none"}, {"emulate", "-no-such-flag"}} {
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}
