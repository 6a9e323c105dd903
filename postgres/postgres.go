// Package postgres is the shared store: the usage ledger's Store and the
// subscription, entitlement and notification stores in one PostgreSQL
// database, on github.com/jackc/pgx/v5 (pgxpool), so that several processes
// (daemons, replicas of a service) work on the same state with no leader.
//
// Durability: a method returns after its transaction committed, which
// PostgreSQL flushes to its WAL before answering (synchronous_commit on, the
// default). Concurrency: report work is claimed with FOR UPDATE SKIP LOCKED
// under a lease that expires; folding and sealing, which rewrite a series'
// state, take a transaction-level advisory lock so that two processes never
// interleave them; ingest itself never waits for them. The schema is
// versioned and embedded; Open migrates it under an advisory lock, so
// processes starting together apply each migration once.
//
// Only transaction-level advisory locks are used, so the store works through
// a pooler in transaction mode (PgBouncer); see docs/scale-out.md.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/saasmarket/marketplace"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Advisory lock keys (pg_advisory_xact_lock), one per critical section.
// The values are arbitrary but fixed: every version of this package must
// use the same ones.
const (
	lockMigrate int64 = 0x6d6b_7470_0001 // "mktp" 1: schema migrations
	lockLedger  int64 = 0x6d6b_7470_0002 // "mktp" 2: fold and seal
)

// Store is a PostgreSQL database holding all of marketplace's state. It is
// safe for concurrent use, and any number of Stores (in any number of
// processes) may share one database.
type Store struct {
	pool *pgxpool.Pool
	// insertEvents stores a commit's event ids: insertEventsFast, or
	// another way in the benchmark that compares them.
	insertEvents eventInserter
	// upsertRun counts down the commits that insert event ids with ON
	// CONFLICT after a fast insert met a stored id.
	upsertRun atomic.Int32
}

// Open connects to the database at connURL (a postgres:// URL or a
// key=value connection string, with pgxpool's pool_* settings such as
// pool_max_conns), checks that it answers, and migrates its schema. Errors
// name the database with its password redacted.
func Open(ctx context.Context, connURL string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		// pgx's parse errors redact the password themselves.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", Redact(connURL), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w", Redact(connURL), err)
	}
	s := &Store{pool: pool, insertEvents: insertEventsFast}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %s: %w", Redact(connURL), err)
	}
	return s, nil
}

// Close closes the store's connections.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Redact returns connURL with its password, if any, replaced by "xxxxx":
// the form in which a connection string may be logged or shown.
func Redact(connURL string) string {
	// Only a URL with "://" has its password where url.Parse puts it
	// ("postgres:app:pw@db" parses too, with the password in Opaque).
	if u, err := url.Parse(connURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") && strings.Contains(connURL, "://") {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// A key=value string, or a URL too broken to parse: blank anything
	// that may be a password.
	connURL = quotedPassword.ReplaceAllString(connURL, "password=xxxxx")
	connURL = plainPassword.ReplaceAllString(connURL, "password=xxxxx")
	if !strings.Contains(connURL, "://") {
		// No scheme: "app:pw@db/mk", or a typo of one ("postgres:/app:pw@db").
		return bareUserinfoPassword.ReplaceAllString(connURL, "${1}:xxxxx@")
	}
	return userinfoPassword.ReplaceAllString(connURL, "${1}:xxxxx@")
}

var (
	quotedPassword   = regexp.MustCompile(`(?i)password\s*=\s*'(?:[^'\\]|\\.)*'`)
	plainPassword    = regexp.MustCompile(`(?i)password\s*=\s*[^'\s][^\s]*`)
	userinfoPassword = regexp.MustCompile(`(://[^:@/]*):[^@]*@`)
	// bareUserinfoPassword: user:password@ at the start of a value without
	// "://", which the error for a -store that is no postgres:// URL shows.
	bareUserinfoPassword = regexp.MustCompile(`^([^:@/\s]*):\S*@`)
)

// migrate applies the embedded migrations that the database lacks, each in
// its own transaction holding the migration lock, so that processes
// starting together apply each one exactly once.
func (s *Store) migrate(ctx context.Context) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	slices.Sort(names)
	for _, name := range names {
		base := path.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with its version number", base)
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
		err = s.tx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockMigrate); err != nil {
				return err
			}
			// Created under the lock: CREATE TABLE IF NOT EXISTS is not
			// safe against a concurrent twin in PostgreSQL.
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
				return err
			}
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, v).Scan(&done); err != nil || done {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", base, err)
		}
	}
	return nil
}

// tx runs fn in one transaction and commits it. A failed commit whose
// outcome cannot be known wraps marketplace.ErrOutcomeUnknown (see
// commitOutcome).
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		// On a broken connection the rollback fails too, and the server
		// rolls the transaction back by itself: nothing to add.
		_ = tx.Rollback(ctx)
		return err
	}
	return commitOutcome(tx.Commit(ctx))
}

// exec runs one statement in its own transaction. Its failure after the
// statement was sent wraps marketplace.ErrOutcomeUnknown unless the server
// refused it (see commitOutcome).
func (s *Store) exec(ctx context.Context, what, q string, args ...any) (int64, error) {
	// Acquired apart, so that no connection to be had (the database is
	// down) is a plain failure: nothing was sent.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("postgres: %s: %w", what, err)
	}
	defer conn.Release()
	tag, err := conn.Exec(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("postgres: %s: %w", what, commitOutcome(err))
	}
	return tag.RowsAffected(), nil
}

// commitOutcome classifies the error of a COMMIT, or of a statement that
// commits by itself, once it may have been sent. The server's own refusal
// means nothing was committed. Anything else (the connection broke, the
// context ended) leaves open whether it was, and wraps
// marketplace.ErrOutcomeUnknown. pgconn.SafeToRetry cannot tell these
// apart: a connection that breaks while the answer is awaited can surface
// as its "conn closed" error, which claims nothing was sent.
func commitOutcome(err error) error {
	var pgErr *pgconn.PgError
	if err == nil || errors.As(err, &pgErr) || errors.Is(err, pgx.ErrTxCommitRollback) {
		return err
	}
	return fmt.Errorf("%w: %w", marketplace.ErrOutcomeUnknown, err)
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
