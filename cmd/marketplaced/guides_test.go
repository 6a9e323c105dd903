package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGuides runs the "against the emulator" section of each cloud's guide
// as a reader would paste it into a shell: every ```sh block, in order, in
// one bash at the repository root, with -e so that any failing command
// fails the test. The guides' fixed ports are swapped for free ones.
func TestGuides(t *testing.T) {
	if testing.Short() {
		t.Skip("builds marketplaced and runs three emulators")
	}
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("the guides need %s: %v", tool, err)
			}
			t.Skipf("the guides need %s: %v", tool, err)
		}
	}
	for _, tc := range []struct{ guide, port string }{
		{"aws", "8471"}, {"azure", "8443"}, {"gcp", "8086"},
	} {
		t.Run(tc.guide, func(t *testing.T) {
			md, err := os.ReadFile("../../docs/" + tc.guide + ".md")
			if err != nil {
				t.Fatal(err)
			}
			script := emulatorSection(t, string(md))
			script = strings.ReplaceAll(script, "127.0.0.1:"+tc.port, "127.0.0.1:"+freePort(t))
			ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
			cmd.Dir = "../.."
			// Its own process group, so that the emulator it starts in the
			// background is stopped even when a step fails.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			// A failed step leaves the emulator holding the output pipe:
			// stop waiting for it once bash has exited.
			cmd.WaitDelay = 2 * time.Second
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err = cmd.Run()
			if cmd.Process != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
			if err != nil {
				t.Fatalf("docs/%s.md's emulator section failed: %v\n--- script\n%s\n--- output\n%s", tc.guide, err, script, out.String())
			}
		})
	}
}

// emulatorSection returns the ```sh blocks of the section whose heading
// says "against the emulator", joined in order.
func emulatorSection(t *testing.T, md string) string {
	t.Helper()
	var b strings.Builder
	in, block, blocks := false, false, 0
	sc := bufio.NewScanner(strings.NewReader(md))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.Contains(strings.ToLower(line), "against the emulator")
		case in && !block && strings.TrimSpace(line) == "```sh":
			block = true
			blocks++
		case block && strings.TrimSpace(line) == "```":
			block = false
		case block:
			b.WriteString(line + "\n")
		}
	}
	if blocks == 0 {
		t.Fatal("no ```sh block in the emulator section")
	}
	return b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
