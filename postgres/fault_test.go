package postgres_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// cutProxy relays PostgreSQL connections to a server and, once armed, cuts
// the connection right after relaying the message that commits: the server
// commits, and the client never hears so.
type cutProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Int32 // a cut mode, or 0
	cuts   atomic.Int32
	wg     sync.WaitGroup

	mu    sync.Mutex
	down  bool                  // the database is unreachable: connections are refused
	conns map[net.Conn]struct{} // the client sides of open relays
}

// setDown makes the database unreachable (breaking every open connection)
// or reachable again.
func (p *cutProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

// Cut modes: what commits.
const (
	cutAtCommit = 1 // the simple query COMMIT ending a transaction
	cutAtSync   = 2 // the Sync after an Execute: a statement outside a transaction
)

func newCutProxy(t *testing.T, dbURL string) (*cutProxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: u.Host, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *cutProxy) serve() {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		conns.Go(func() { p.relay(c) })
	}
}

func (p *cutProxy) relay(client net.Conn) {
	defer client.Close()
	p.mu.Lock()
	down := p.down
	if !down {
		p.conns[client] = struct{}{}
	}
	p.mu.Unlock()
	if down {
		return
	}
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		p.mu.Unlock()
	}()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	// From the moment the commit is relayed, the server's answers are
	// dropped: the client must not hear that it committed.
	var cut atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !cut.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		client.Close()
	}()
	// The startup message has no type byte: a length, then the body.
	if !relayMsg(client, server, false, nil) {
		return
	}
	executed := false // an Execute since the last Sync
	for {
		commits := false
		if !relayMsg(client, server, true, func(typ byte, body []byte) {
			defer func() { cut.Store(commits) }()
			switch typ {
			case 'E':
				executed = true
			case 'S':
				commits, executed = executed && p.armed.Load() == cutAtSync, false
			case 'Q':
				commits = p.armed.Load() == cutAtCommit && strings.EqualFold(strings.TrimRight(string(body), "\x00; "), "commit")
			}
		}) {
			break
		}
		if commits {
			// Give the server the time to commit, then cut.
			time.Sleep(200 * time.Millisecond)
			p.armed.Store(0)
			p.cuts.Add(1)
			break
		}
	}
	server.Close()
	client.Close()
	<-done
}

// relayMsg copies one protocol message from src to dst.
func relayMsg(src, dst net.Conn, typed bool, seen func(typ byte, body []byte)) bool {
	hdr := make([]byte, 5)
	h := hdr[1:]
	if typed {
		h = hdr
	}
	if _, err := io.ReadFull(src, h); err != nil {
		return false
	}
	n := int(binary.BigEndian.Uint32(h[len(h)-4:])) - 4
	if n < 0 || n > 64<<20 {
		return false
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(src, body); err != nil {
		return false
	}
	if seen != nil {
		seen(hdr[0], body)
	}
	_, err := dst.Write(append(h, body...))
	return err == nil
}

// TestCommitOutcomeUnknown: the connection breaks after the server
// committed an append and before the answer came back. The store must
// say that it cannot tell (ErrOutcomeUnknown), never that it failed, and
// what it committed must be there.
func TestCommitOutcomeUnknown(t *testing.T) {
	db := pg.NewDB(t)
	proxy, viaProxy := newCutProxy(t, db)
	s := open(t, viaProxy)
	now := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		id   string // with an id: a transaction ending in COMMIT; without: one statement
		mode int32
	}{{"Transaction", "ev-1", cutAtCommit}, {"SingleStatement", "", cutAtSync}} {
		t.Run(tc.name, func(t *testing.T) {
			recs := []ledger.Record{{Provider: "aws", Customer: "c-" + tc.name, Dimension: "req", Quantity: 7, Time: now, EventID: tc.id}}
			proxy.armed.Store(tc.mode)
			cuts := proxy.cuts.Load()
			_, err := s.Append(t.Context(), ledger.NewAppendBatch(recs, now.Add(72*time.Hour)))
			if proxy.cuts.Load() != cuts+1 {
				t.Fatalf("the proxy did not cut the commit (err %v)", err)
			}
			if !errors.Is(err, marketplace.ErrOutcomeUnknown) {
				t.Fatalf("append cut after commit: %v, want ErrOutcomeUnknown", err)
			}
			// It did land: a direct handle folds it, and the id is known.
			direct := open(t, db)
			if _, err := direct.Fold(t.Context()); err != nil {
				t.Fatal(err)
			}
			bs, err := direct.Buckets(t.Context(), ledger.BucketFilter{Customer: "c-" + tc.name})
			if err != nil || len(bs) != 1 || bs[0].Quantity != 7 {
				t.Fatalf("after the cut commit: %+v, %v; want the 7 committed", bs, err)
			}
			if tc.id != "" {
				fresh, err := direct.Append(t.Context(), ledger.NewAppendBatch(recs, now.Add(72*time.Hour)))
				if err != nil || len(fresh) != 1 || fresh[0] {
					t.Errorf("retry of the cut commit: fresh %v, %v; want a duplicate", fresh, err)
				}
			}
		})
	}
	// A statement the server refuses is a plain failure, not an unknown one.
	_, err := s.PutSubscription(t.Context(), marketplace.Subscription{Provider: "aws", ID: "s", Attributes: map[string]string{"bad": "\x00"}})
	if err == nil || errors.Is(err, marketplace.ErrOutcomeUnknown) {
		t.Errorf("refused statement: %v, want an error that is not ErrOutcomeUnknown", err)
	}
}

// TestAppendRacingSameEventID: another process commits an event id while
// an append of the same id waits for it. The fast insert fails on the
// unique index; the append must redo the commit and count the id as seen,
// not fail and not count it twice.
func TestAppendRacingSameEventID(t *testing.T) {
	db := pg.NewDB(t)
	s := open(t, db)
	other, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	tx, err := other.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `INSERT INTO events (id, expires) VALUES ('ev-b', 0)`); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	recs := []ledger.Record{
		{Provider: "aws", Customer: "c", Dimension: "req", Quantity: 1, Time: now, EventID: "ev-a"},
		{Provider: "aws", Customer: "c", Dimension: "req", Quantity: 10, Time: now, EventID: "ev-b"},
	}
	type result struct {
		fresh []bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		fresh, err := s.Append(t.Context(), ledger.NewAppendBatch(recs, now.Add(72*time.Hour)))
		done <- result{fresh, err}
	}()
	// Commit only once the append waits on the uncommitted id.
	for waiting := false; !waiting; {
		if err := other.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			t.Fatalf("append returned before the other commit: %+v", r)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || len(r.fresh) != 2 || !r.fresh[0] || r.fresh[1] {
		t.Fatalf("append racing a commit of ev-b: fresh %v, %v; want [true false]", r.fresh, r.err)
	}
	if _, err := s.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := s.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil || len(bs) != 1 || bs[0].Quantity != 1 {
		t.Errorf("buckets: %+v, %v; want ev-a's 1 only", bs, err)
	}
}

// TestDatabaseOutage: while the database is unreachable the store fails
// (an append either plainly or as unknown, never as a success), and once
// it is back the same Store works again without being reopened.
func TestDatabaseOutage(t *testing.T) {
	db := pg.NewDB(t)
	proxy, viaProxy := newCutProxy(t, db)
	s := open(t, viaProxy)
	now := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	appendOne := func(id string) error {
		recs := []ledger.Record{{Provider: "azure", Customer: "c", Dimension: "req", Quantity: 1, Time: now, EventID: id}}
		_, err := s.Append(t.Context(), ledger.NewAppendBatch(recs, now.Add(72*time.Hour)))
		return err
	}
	if err := appendOne("before"); err != nil {
		t.Fatal(err)
	}
	proxy.setDown(true)
	if err := appendOne("during"); err == nil {
		t.Error("append succeeded with the database down")
	}
	if _, err := s.Claim(t.Context(), ledger.ClaimRequest{Provider: "azure", Owner: "o", Now: now, Lease: time.Minute, Limit: 1}); err == nil {
		t.Error("claim succeeded with the database down")
	}
	proxy.setDown(false)
	if err := appendOne("after"); err != nil {
		t.Fatalf("append after the database came back: %v", err)
	}
	if _, err := s.Fold(t.Context()); err != nil {
		t.Fatal(err)
	}
	bs, err := s.Buckets(t.Context(), ledger.BucketFilter{})
	if err != nil || len(bs) != 1 || bs[0].Quantity != 2 {
		t.Errorf("buckets after the outage: %+v, %v; want the 2 records sent while it was up", bs, err)
	}
}
