// Package pgtest finds a PostgreSQL server for tests and makes a fresh
// database on it for each test.
//
// The server is, in order: the one MARKETPLACE_TEST_POSTGRES names (a
// postgres:// URL of a role that may CREATE DATABASE); otherwise a throwaway
// cluster that Start makes with initdb and pg_ctl from
// /usr/lib/postgresql/*/bin, on a free loopback port in a temporary folder
// (as the "postgres" user when run as root, since PostgreSQL refuses to run
// as root); otherwise none, and NewDB skips the test saying how to run it —
// or fails it when the environment variable CI is set, so that CI never
// passes by skipping.
//
// A test package starts one server for all its tests:
//
//	var pg *pgtest.Server
//
//	func TestMain(m *testing.M) {
//		pg = pgtest.Start(context.Background())
//		code := m.Run()
//		pg.Close()
//		os.Exit(code)
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that points the tests at a server.
const EnvURL = "MARKETPLACE_TEST_POSTGRES"

// howTo is appended to every reason the tests cannot run.
const howTo = "to run the PostgreSQL tests, set " + EnvURL + "=postgres://USER@HOST:PORT/DB?sslmode=disable " +
	"(a role that may CREATE DATABASE) or install PostgreSQL's server binaries (Debian: apt-get install postgresql)"

// Server is a PostgreSQL server for tests, or the reason there is none.
type Server struct {
	admin  string // URL of a database on the server to create others from
	reason string // why there is no server, when admin is empty
	dir    string // the throwaway cluster's folder, if Start made one
	pgCtl  string
	opts   string // the cluster's server options, for Restart
	cred   *syscall.Credential
}

// Start finds or starts a server. It does not fail: when there is no
// server, NewDB reports why.
func Start(ctx context.Context) *Server {
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{admin: u}
	}
	s, err := startCluster(ctx)
	if err != nil {
		return &Server{reason: err.Error() + "; " + howTo}
	}
	return s
}

// StartCluster starts a throwaway cluster even when MARKETPLACE_TEST_POSTGRES
// is set: for a test that restarts its server (Restart), which no other
// test may share. Like Start it does not fail: URL and NewDB report why
// there is no server.
func StartCluster(ctx context.Context) *Server {
	s, err := startCluster(ctx)
	if err != nil {
		return &Server{reason: err.Error() + "; " + howTo}
	}
	return s
}

// Restart stops the throwaway cluster (pg_ctl stop -m fast: every
// connection breaks), keeps it down for down, and starts it again on the
// same port: a database outage, or a failover, for the clients.
func (s *Server) Restart(ctx context.Context, down time.Duration) error {
	if s == nil || s.dir == "" {
		return errors.New("pgtest: Restart needs a cluster that StartCluster made")
	}
	data := filepath.Join(s.dir, "data")
	if out, err := run(ctx, s.cred, s.pgCtl, "stop", "-D", data, "-m", "fast", "-w"); err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(down):
	}
	if out, err := run(ctx, s.cred, s.pgCtl, "start", "-D", data, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "-o", s.opts); err != nil {
		return fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	return nil
}

// URL returns the URL of the server's administrative database, or skips
// (fails, under CI) t when there is no server.
func (s *Server) URL(t testing.TB) string {
	t.Helper()
	if s == nil || s.admin == "" {
		reason := "pgtest.Start was not called"
		if s != nil {
			reason = s.reason
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("no PostgreSQL server (CI is set, so this fails instead of skipping): %s", reason)
		}
		t.Skipf("no PostgreSQL server: %s", reason)
	}
	return s.admin
}

// NewDB creates an empty database for t, dropped when t ends (with any
// connections still open to it), and returns its URL.
func (s *Server) NewDB(t testing.TB) string {
	t.Helper()
	admin := s.URL(t)
	var b [8]byte
	rand.Read(b[:])
	name := "marketplace_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, admin, `CREATE DATABASE `+name); err != nil {
		t.Fatalf("pgtest: create database on %s: %v", redact(admin), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, admin, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dbURL, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dbURL
}

// Close stops and removes the throwaway cluster, if Start made one.
func (s *Server) Close() error {
	if s == nil || s.dir == "" {
		return nil
	}
	_, err := run(context.Background(), s.cred, s.pgCtl, "stop", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w")
	return errors.Join(err, os.RemoveAll(s.dir))
}

func adminExec(ctx context.Context, admin, q string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, q)
	return err
}

// withDatabase returns connURL naming database name instead of its own.
func withDatabase(connURL, name string) (string, error) {
	if strings.HasPrefix(connURL, "postgres://") || strings.HasPrefix(connURL, "postgresql://") {
		u, err := url.Parse(connURL)
		if err != nil {
			return "", fmt.Errorf("%s is not a valid URL: %w", EnvURL, err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// key=value form: a later setting wins.
	return connURL + " dbname=" + name, nil
}

func redact(connURL string) string {
	if u, err := url.Parse(connURL); err == nil {
		return u.Redacted()
	}
	return "the server"
}

// startCluster makes a cluster in a temporary folder with the newest
// installed PostgreSQL and starts it on a free loopback port.
func startCluster(ctx context.Context) (*Server, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, fmt.Errorf("%s is not set and no initdb under /usr/lib/postgresql/*/bin", EnvURL)
	}
	slices.SortFunc(bins, func(a, b string) int { return version(a) - version(b) })
	bin := filepath.Dir(bins[len(bins)-1])
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs another user, and there is no user postgres: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, pgCtl: filepath.Join(bin, "pg_ctl"), cred: cred}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := run(ctx, cred, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync",
		"-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// PostgreSQL's defaults otherwise, fsync included: benchmarks run on
	// this cluster measure durable commits.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", port, dir)
	if out, err := run(ctx, cred, s.pgCtl, "start", "-D", data, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_ctl start: %w: %s %s", err, out, log)
	}
	s.opts = opts
	s.admin = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return s, nil
}

// version is the major version in a path /usr/lib/postgresql/N/bin/….
func version(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func run(ctx context.Context, cred *syscall.Credential, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = os.TempDir()
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	return cmd.CombinedOutput()
}
