package gcp_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/saasmarket/marketplace/gcp"
)

var gcloudDeadStreams = flag.Bool("pubsub.gcloud-dead-streams", false,
	"also run TestPubSubRedeliversWhatAKilledSubscriberHeld against Google's Pub/Sub emulator (it fails there: see RELIABILITY.md)")

// TestPubSubRedeliversWhatAKilledSubscriberHeld checks what Run's "acknowledge
// only once stored" rests on, and what the daemon's crash test needs of its
// Pub/Sub: a message a subscriber held when it was SIGKILLed comes back at its
// ack deadline, and the dead subscriber is given nothing more. Subscribers in
// child processes each take a message without acknowledging it and are
// killed; a live subscriber must then receive those and fresh messages within
// a few ack deadlines.
//
// pstest (the Go client's fake) behaves like the cloud. Google's emulator
// (0.8.20) does not: it keeps serving the streams of killed subscribers,
// leasing messages to them again and again, so messages reach the live
// subscriber only minutes later. -pubsub.gcloud-dead-streams runs the case
// that shows it.
func TestPubSubRedeliversWhatAKilledSubscriberHeld(t *testing.T) {
	backends := map[string]func(t *testing.T) string{
		"pstest": func(t *testing.T) string {
			srv := pstest.NewServer()
			t.Cleanup(func() { srv.Close() })
			return srv.Addr
		},
	}
	if *gcloudDeadStreams {
		backends["gcloud-emulator"] = func(t *testing.T) string {
			gcloud, err := exec.LookPath("gcloud")
			if err != nil {
				t.Fatal("-pubsub.gcloud-dead-streams needs gcloud with the Pub/Sub emulator")
			}
			return startGcloudPubSub(t, gcloud)
		}
	}
	for name, start := range backends {
		t.Run(name, func(t *testing.T) {
			addr := start(t)
			client := dialPubSub(t, addr)
			pub, sub := topic(t, client, "redelivery")
			publish := func(data string) {
				t.Helper()
				if _, err := pub.Publish(t.Context(), &pubsub.Message{Data: []byte(data)}).Get(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			const kills = 4
			want := map[string]bool{}
			for i := range kills {
				held := fmt.Sprintf("held-%d", i)
				holdAndDie(t, addr, sub.String(), held, func() { publish(held) })
				want[held] = true
			}
			killed := time.Now()
			for i := range 6 {
				fresh := fmt.Sprintf("fresh-%d", i)
				publish(fresh)
				want[fresh] = true
			}

			// Four ack deadlines (10 s each) is ample for the cloud.
			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()
			var mu sync.Mutex
			got := map[string]time.Duration{}
			err := sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
				m.Ack()
				mu.Lock()
				defer mu.Unlock()
				if _, ok := got[string(m.Data)]; !ok {
					got[string(m.Data)] = time.Since(killed).Round(100 * time.Millisecond)
				}
				if len(got) >= len(want) {
					cancel()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			var missing []string
			for m := range want {
				if _, ok := got[m]; !ok {
					missing = append(missing, m)
				}
			}
			slices.Sort(missing)
			t.Logf("received after the last kill: %v", got)
			if len(missing) > 0 {
				t.Errorf("%d of %d messages not received within 40 s of the last kill: %v", len(missing), len(want), missing)
			}
		})
	}
}

// holdAndDie starts a subscriber in a child process, publishes with
// publish, waits until the child holds message data without acknowledging
// it, and SIGKILLs the child.
func holdAndDie(t *testing.T, addr, sub, data string, publish func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PUBSUB_EMULATOR_HOST="+addr, "GCP_TEST_HOLDER_SUBSCRIPTION="+sub)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGKILL)
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	publish()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the holding subscriber exited before it received %s", data)
			}
			if l == "holding "+data {
				return
			}
		case <-timeout:
			t.Fatalf("a new subscriber was not given %s within 20 s of its publication, though no other live subscriber exists", data)
		}
	}
}

// TestMain runs the test binary as holdAndDie's child when it is started
// as one, and the tests otherwise.
func TestMain(m *testing.M) {
	if sub := os.Getenv("GCP_TEST_HOLDER_SUBSCRIPTION"); sub != "" {
		if err := hold(sub); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// hold receives from sub and never acknowledges: the child of holdAndDie,
// which kills it.
func hold(sub string) error {
	ctx := context.Background()
	c, err := pubsub.NewClient(ctx, project)
	if err != nil {
		return err
	}
	s := c.Subscriber(sub)
	// The daemon's lease settings (cmd/marketplaced serve).
	s.ReceiveSettings.MaxDurationPerAckExtension = gcp.LeaseExtension
	return s.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
		fmt.Printf("holding %s\n", strings.TrimSpace(string(m.Data)))
		<-ctx.Done()
	})
}
