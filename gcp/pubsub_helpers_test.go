package gcp_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const project = "seller-project"

// pubsubBackend makes Pub/Sub clients for a test.
type pubsubBackend struct {
	name string
	dial func(t *testing.T) *pubsub.Client
}

// pstestBackend is the in-process fake that ships with the client.
func pstestBackend() pubsubBackend {
	return pubsubBackend{name: "pstest", dial: func(t *testing.T) *pubsub.Client {
		t.Helper()
		srv := pstest.NewServer()
		t.Cleanup(func() { srv.Close() })
		return dialPubSub(t, srv.Addr)
	}}
}

// gcloudBackend starts Google's Pub/Sub emulator on a free loopback port
// when gcloud is installed, and stops it (with its Java child) when the
// test ends. Without gcloud it reports false, and fails the test when the
// environment variable CI is set: CI must run Google's own emulator.
func gcloudBackend(t *testing.T) (pubsubBackend, bool) {
	t.Helper()
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but gcloud is not on PATH: install the Google Cloud CLI with the Pub/Sub emulator " +
				"(gcloud components install pubsub-emulator beta) to run the lifecycle against Google's Pub/Sub emulator")
		}
		return pubsubBackend{}, false
	}
	return pubsubBackend{name: "gcloud-emulator", dial: func(t *testing.T) *pubsub.Client {
		t.Helper()
		addr := startGcloudPubSub(t, gcloud)
		// The client's own emulator support, as a seller would use it.
		t.Setenv("PUBSUB_EMULATOR_HOST", addr)
		c, err := pubsub.NewClient(t.Context(), project)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}}, true
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startGcloudPubSub(t *testing.T, gcloud string) string {
	t.Helper()
	addr := freePort(t)
	cmd := exec.Command(gcloud, "beta", "emulators", "pubsub", "start", "--host-port="+addr, "--project="+project, "--quiet")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the Pub/Sub emulator: %v", err)
	}
	var logMu sync.Mutex
	var logs []string
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			logs = append(logs, sc.Text())
			logMu.Unlock()
			if strings.Contains(sc.Text(), "Server started") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	t.Cleanup(func() {
		// The group holds gcloud's python and the emulator's java.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		_ = cmd.Wait()
	})
	select {
	case <-ready:
	case <-done:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("the Pub/Sub emulator exited:\n%s", strings.Join(logs, "\n"))
	case <-time.After(60 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("the Pub/Sub emulator did not start in 60 s:\n%s", strings.Join(logs, "\n"))
	}
	return addr
}

func dialPubSub(t *testing.T, addr string) *pubsub.Client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pubsub.NewClient(t.Context(), project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

// topic creates a topic and a pull subscription on it.
func topic(t *testing.T, c *pubsub.Client, name string) (*pubsub.Publisher, *pubsub.Subscriber) {
	t.Helper()
	ctx := t.Context()
	tn := fmt.Sprintf("projects/%s/topics/%s", project, name)
	sn := fmt.Sprintf("projects/%s/subscriptions/%s-sub", project, name)
	if _, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: tn}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sn, Topic: tn, AckDeadlineSeconds: 10}); err != nil {
		t.Fatal(err)
	}
	p := c.Publisher(tn)
	t.Cleanup(p.Stop)
	return p, c.Subscriber(sn)
}

// recordingPublisher keeps every event the emulator publishes, and
// forwards it when next is set.
type recordingPublisher struct {
	mu   sync.Mutex
	data [][]byte
	next interface {
		Publish(context.Context, []byte) error
	}
}

func (r *recordingPublisher) Publish(ctx context.Context, data []byte) error {
	r.mu.Lock()
	r.data = append(r.data, data)
	r.mu.Unlock()
	if r.next != nil {
		return r.next.Publish(ctx, data)
	}
	return nil
}

func (r *recordingPublisher) events() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.data...)
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
