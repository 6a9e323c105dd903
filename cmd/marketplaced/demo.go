package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/saasmarket/marketplace/server"
)

// The demo's fast clock: the ledger's hours pass demoClockRate times faster
// than the wall's, starting demoClockBehind ago, so that an hour ends, is
// sealed and is billed about every minute while the clouds still take the
// hours as past (AWS and Azure accept usage of the last 24 hours).
const (
	demoClockRate   = 60
	demoClockBehind = 23 * time.Hour
)

// demoMarker marks a data folder as the demo's: only such a folder is
// started over (the emulators keep their buyers in memory, so a previous
// run's subscriptions would name buyers nobody knows).
const demoMarker = ".marketplaced-demo"

// runDemo is marketplaced demo: the three emulators and the daemon in one
// process, demo buyers subscribing through each cloud's real landing and
// notification paths, and traffic through POST /v1/usage, until ctx ends.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("marketplaced demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: marketplaced demo [flags]\n\n"+
			"Runs marketplaced serve and the AWS, Azure and Google emulators in one process, with SQLite in\n"+
			"the data folder: demo buyers subscribe on each cloud through its landing page and notifications,\n"+
			"traffic records usage through the HTTP API, and the ledger's clock runs 60 times fast, so that\n"+
			"each cloud's emulator bills usage about every minute. Ctrl-C stops it.\n\nflags:")
		fs.PrintDefaults()
	}
	dataDir := fs.String("data", "marketplace-demo-data", "data folder (SQLite store, the daemon's log); a previous demo's data in it is removed at start")
	addr := fs.String("addr", "127.0.0.1:8080", "listen address of the daemon (API, landing pages, dashboard); 127.0.0.1:0 picks a free port")
	apiKey := fs.String("api-key", "", "the /v1 and dashboard API key, at least 16 characters (empty: a new random one, printed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("demo: unexpected argument %q", fs.Arg(0))
	}
	if *apiKey == "" {
		*apiKey = randomKey()
	}
	if len(*apiKey) < 16 {
		return errors.New("demo: -api-key must be at least 16 characters")
	}
	restarted, err := prepareDemoData(*dataDir)
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(*dataDir, "marketplaced.log"))
	if err != nil {
		return fmt.Errorf("demo: setting -data: %w", err)
	}
	defer logFile.Close()
	logger := slog.New(slog.NewJSONHandler(logFile, nil))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("demo: setting -addr: %w", err)
	}
	defer ln.Close()
	daemonURL := "http://" + ln.Addr().String()

	// The emulators outlive the daemon: its reporters and lifecycle
	// worker may still call them while it drains.
	emuCtx, stopEmulators := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup // the emulators' goroutines and the demo's driver
	defer func() {
		stopEmulators()
		bg.Wait()
	}()
	clouds, err := startDemoEmulators(emuCtx, &bg, *dataDir, daemonURL, logger)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	cfg, err := demoConfig(ln.Addr().String(), *dataDir, *apiKey, clouds)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	out := &lineWriter{w: stdout}
	if restarted {
		out.printf("marketplaced demo: started over in %s (the emulators keep no buyers between runs)", *dataDir)
	}
	out.printf("marketplaced demo: the daemon and the AWS, Azure and Google emulators, in one process")
	out.printf("  dashboard  %s/dashboard/ (sign in with the API key)", daemonURL)
	out.printf("  API key    %s", *apiKey)
	out.printf("  API        curl -H 'Authorization: Bearer %s' %s/v1/subscriptions", *apiKey, daemonURL)
	out.printf("  admin      go run ./cmd/marketplaced subscriptions list -addr %s -api-key %s   (also usage, seal)", daemonURL, *apiKey)
	out.printf("  data       %s (SQLite; the log is %s)", *dataDir, logFile.Name())
	for i, c := range clouds {
		label := ""
		if i == 0 {
			label = "emulators"
		}
		out.printf("  %-9s  %s emulator, admin API %s/emulator/ (the bill: %s)", label, c.title, c.baseURL, c.adminInfo)
	}
	out.printf("  clock      the ledger's clock runs %d times fast from %.0f hours ago: an hour ends, is sealed and billed every minute", demoClockRate, demoClockBehind.Hours())
	out.printf("Ctrl-C stops it.")

	driverCtx, stopDriver := context.WithCancel(ctx)
	defer stopDriver()
	d := &demoDriver{url: daemonURL, key: *apiKey, clouds: clouds, out: out, clock: cfg.Clock(), logger: logger,
		client: &http.Client{Timeout: 30 * time.Second}}
	bg.Add(1)
	go func() {
		defer bg.Done()
		d.run(driverCtx)
	}()
	err = serve(ctx, cfg, logger, serveOptions{ln: ln, aws: clouds.awsOptions()})
	stopDriver()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	out.printf("marketplaced demo: stopped; the data is in %s", *dataDir)
	return nil
}

// prepareDemoData creates the data folder, or starts a previous demo's
// over. It refuses a folder that holds another daemon's store.
func prepareDemoData(dir string) (restarted bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("demo: setting -data: %w", err)
	}
	marker := filepath.Join(dir, demoMarker)
	_, markerErr := os.Stat(marker)
	if _, err := os.Stat(filepath.Join(dir, "marketplace.db")); err == nil {
		if markerErr != nil {
			return false, fmt.Errorf("demo: setting -data: %s holds a marketplace.db that is not a demo's; give the demo a folder of its own", dir)
		}
		restarted = true
	}
	for _, name := range []string{"marketplace.db", "marketplace.db-wal", "marketplace.db-shm", "catalogue.json", "azure-emulator-ca.pem", "marketplaced.log"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("demo: setting -data: %w", err)
		}
	}
	if err := os.WriteFile(marker, []byte("marketplaced demo data: the demo removes it at its next start\n"), 0o600); err != nil {
		return false, fmt.Errorf("demo: setting -data: %w", err)
	}
	return restarted, nil
}

// demoConfig is the daemon's configuration, built as serve builds it from
// flags, with the demo's secrets in place of the environment.
func demoConfig(addr, dataDir, apiKey string, clouds demoClouds) (server.Config, error) {
	cat := filepath.Join(dataDir, "catalogue.json")
	var products []string
	for _, c := range clouds {
		products = append(products, c.catalogue)
	}
	if err := os.WriteFile(cat, []byte("{\"products\": [\n  "+strings.Join(products, ",\n  ")+"\n]}\n"), 0o600); err != nil {
		return server.Config{}, err
	}
	args := []string{"-addr", addr, "-data", dataDir, "-catalogue", cat, "-shutdown-timeout", "10s",
		// Demo and testing only (docs/configuration.md): hours end every
		// minute and are sealed within seconds of their grace.
		"-clock-rate", fmt.Sprint(demoClockRate), "-clock-offset", (-demoClockBehind).String(),
		"-clock-anchor", time.Now().UTC().Format(time.RFC3339), "-seal-every", "2s"}
	env := map[string]string{server.EnvPrefix + "API_KEYS": apiKey}
	for _, c := range clouds {
		args = append(args, c.serveArgs...)
		for k, v := range c.serveEnv {
			env[k] = v
		}
	}
	// Only the demo's settings: a MARKETPLACED_* variable of the
	// newcomer's shell must not change what the demo shows.
	return server.ParseConfig(args, func(k string) string { return env[k] }, io.Discard)
}

// awsOptions point the AWS SDK at the demo's AWS emulator, whatever the
// shell's AWS settings.
func (cs demoClouds) awsOptions() []func(*awsconfig.LoadOptions) error {
	for _, c := range cs {
		if c.provider == "aws" {
			return []func(*awsconfig.LoadOptions) error{
				awsconfig.WithBaseEndpoint(c.baseURL),
				awsconfig.WithRegion("us-east-1"),
				awsconfig.WithSharedConfigFiles([]string{}),
				awsconfig.WithSharedCredentialsFiles([]string{}),
				awsconfig.WithCredentialsProvider(awssdk.CredentialsProviderFunc(func(context.Context) (awssdk.Credentials, error) {
					return awssdk.Credentials{AccessKeyID: demoAWSAccessKey, SecretAccessKey: demoAWSSecretKey, Source: "marketplaced demo"}, nil
				})),
			}
		}
	}
	return nil
}

func randomKey() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return "demo-" + hex.EncodeToString(b)
}

// lineWriter prints whole lines for the driver and the main flow at once.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}
