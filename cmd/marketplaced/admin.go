package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
	"github.com/saasmarket/marketplace/postgres"
	"github.com/saasmarket/marketplace/server"
	"github.com/saasmarket/marketplace/sqlite"
)

// The admin commands (subscriptions, usage, seal, reconcile, quarantine) read and act
// on a running daemon through its /v1 API (-addr, -api-key) or directly
// on its store: -data for a data folder's SQLite store, -store for a
// PostgreSQL one. Both ways give the same views, in the API's JSON shapes
// (docs/api.md).

// subView is a subscription as GET /v1/subscriptions shows it.
type subView = server.SubscriptionView

// bucketView is an hourly bucket as GET /v1/usage shows it, with its
// provider and customer.
type bucketView struct {
	Provider  string    `json:"provider"`
	Customer  string    `json:"customer"`
	Dimension string    `json:"dimension"`
	Hour      time.Time `json:"hour"`
	Quantity  int64     `json:"quantity"`
	Late      int64     `json:"late"`
	Units     int64     `json:"units"`
	State     string    `json:"state"`
	ReportID  string    `json:"report_id"`
	RecordID  string    `json:"record_id"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
}

// adminSource is where an admin command reads and acts.
type adminSource interface {
	Subscriptions(ctx context.Context, provider, state string) ([]subView, error)
	Subscription(ctx context.Context, provider, customer string) (subView, error)
	// Usage lists a customer's buckets whose hour is in [from, to).
	Usage(ctx context.Context, provider, customer string, from, to time.Time) ([]bucketView, error)
	Seal(ctx context.Context, provider, customer string) (int, error)
	// Quarantined lists the quarantined rows (without their data) and
	// counts them per source.
	Quarantined(ctx context.Context) ([]quarantinedView, map[string]int64, error)
	// QuarantinedRow returns one quarantined row with its data.
	QuarantinedRow(ctx context.Context, id int64) (quarantinedView, error)
	// Restore puts a quarantined row back, mended with data (nil: as
	// stored), and returns what went back.
	Restore(ctx context.Context, id int64, data []byte) (quarantinedView, error)
	// Discard removes a quarantined row for good and returns it as it
	// was, with its data.
	Discard(ctx context.Context, id int64) (quarantinedView, error)
	Close() error
}

// quarantinedView is a quarantined row as GET /v1/quarantine/{id} shows it.
type quarantinedView = server.QuarantinedView

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	addr, apiKey, data, store, catalogue string
	json                                 bool
}

func (f *adminFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	key := getenv("MARKETPLACED_API_KEY")
	if key == "" { // the daemon's own setting: its first key
		key, _, _ = strings.Cut(getenv(server.EnvPrefix+"API_KEYS"), ",")
	}
	fs.StringVar(&f.addr, "addr", cmp.Or(getenv("MARKETPLACED_URL"), "http://127.0.0.1:8080"), "the daemon's base URL [MARKETPLACED_URL]")
	fs.StringVar(&f.apiKey, "api-key", strings.TrimSpace(key), "an API key of the daemon [MARKETPLACED_API_KEY, else the first of MARKETPLACED_API_KEYS]")
	fs.StringVar(&f.data, "data", "", "work on this data folder's SQLite store instead of a daemon's API (the daemon may be running)")
	fs.StringVar(&f.store, "store", "", "work on this PostgreSQL store (postgres://USER@HOST:5432/DB) instead of a daemon's API (daemons may be running); "+
		"leave the password out and set PGPASSWORD or ~/.pgpass: flags show in ps")
	fs.StringVar(&f.catalogue, "catalogue", getenv(server.EnvPrefix+"CATALOGUE"), "with -data or -store: the daemon's catalogue, for its billing units (seal needs it) [MARKETPLACED_CATALOGUE]")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of a table")
}

// open returns the source the flags name.
func (f *adminFlags) open(ctx context.Context) (adminSource, error) {
	var (
		st  store
		err error
	)
	switch {
	case f.data != "" && f.store != "":
		return nil, errors.New("setting -data and -store: give one of them (the SQLite data folder or the PostgreSQL store), or neither to use the daemon's API")
	case f.store != "":
		if err := server.CheckStoreURL(f.store); err != nil {
			return nil, fmt.Errorf("setting -store: want %w", err)
		}
		if st, err = postgres.Open(ctx, f.store); err != nil {
			return nil, fmt.Errorf("setting -store: %w", err)
		}
	case f.data != "":
		db := filepath.Join(f.data, "marketplace.db")
		if _, err := os.Stat(db); err != nil {
			return nil, fmt.Errorf("setting -data: %s holds no marketplace.db: %w", f.data, err)
		}
		if st, err = sqlite.Open(ctx, db); err != nil {
			return nil, fmt.Errorf("setting -data: %w", err)
		}
	default:
		if f.apiKey == "" {
			return nil, errors.New("setting -api-key: required to use the daemon's API (or give -data or -store to work on its store)")
		}
		u, err := url.Parse(f.addr)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("setting -addr: want the daemon's base URL such as http://127.0.0.1:8080, got %q", f.addr)
		}
		return &apiSource{base: strings.TrimSuffix(f.addr, "/"), key: f.apiKey, client: &http.Client{Timeout: time.Minute}}, nil
	}
	s := &storeSource{store: st}
	if f.catalogue != "" {
		if s.catalogue, err = server.LoadCatalogue(f.catalogue); err != nil {
			st.Close()
			return nil, fmt.Errorf("setting -catalogue: %w", err)
		}
	}
	return s, nil
}

// apiSource is a running daemon's /v1 API.
type apiSource struct {
	base, key string
	client    *http.Client
}

func (a *apiSource) Close() error { return nil }

func (a *apiSource) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	return json.Unmarshal(b, out)
}

func (a *apiSource) Subscriptions(ctx context.Context, provider, state string) ([]subView, error) {
	var all []subView
	q := url.Values{"limit": {"1000"}}
	if provider != "" {
		q.Set("provider", provider)
	}
	if state != "" {
		q.Set("state", state)
	}
	for {
		var page struct {
			Subscriptions []subView `json:"subscriptions"`
			NextCursor    *string   `json:"next_cursor"`
		}
		if err := a.call(ctx, http.MethodGet, "/v1/subscriptions?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Subscriptions...)
		if page.NextCursor == nil {
			return all, nil
		}
		q.Set("cursor", *page.NextCursor)
	}
}

func (a *apiSource) Subscription(ctx context.Context, provider, customer string) (subView, error) {
	var s subView
	err := a.call(ctx, http.MethodGet, "/v1/subscriptions/"+url.PathEscape(provider)+"/"+url.PathEscape(customer), nil, &s)
	return s, err
}

func (a *apiSource) Usage(ctx context.Context, provider, customer string, from, to time.Time) ([]bucketView, error) {
	q := url.Values{"provider": {provider}, "customer": {customer},
		"from": {from.UTC().Format(time.RFC3339)}, "to": {to.UTC().Format(time.RFC3339)}}
	var out struct {
		Buckets []bucketView `json:"buckets"`
	}
	if err := a.call(ctx, http.MethodGet, "/v1/usage?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	for i := range out.Buckets {
		out.Buckets[i].Provider, out.Buckets[i].Customer = provider, customer
	}
	return out.Buckets, nil
}

func (a *apiSource) Seal(ctx context.Context, provider, customer string) (int, error) {
	var out struct {
		Sealed int `json:"sealed"`
	}
	err := a.call(ctx, http.MethodPost, "/v1/usage/seal", map[string]string{"provider": provider, "customer": customer}, &out)
	return out.Sealed, err
}

func (a *apiSource) Quarantined(ctx context.Context) ([]quarantinedView, map[string]int64, error) {
	var out struct {
		Quarantined []quarantinedView `json:"quarantined"`
		Counts      map[string]int64  `json:"counts"`
	}
	err := a.call(ctx, http.MethodGet, "/v1/quarantine", nil, &out)
	return out.Quarantined, out.Counts, err
}

func (a *apiSource) QuarantinedRow(ctx context.Context, id int64) (quarantinedView, error) {
	var q quarantinedView
	err := a.call(ctx, http.MethodGet, "/v1/quarantine/"+strconv.FormatInt(id, 10), nil, &q)
	return q, err
}

func (a *apiSource) Restore(ctx context.Context, id int64, data []byte) (quarantinedView, error) {
	var in any // no body: the row goes back as stored
	if data != nil {
		in = map[string][]byte{"data": data}
	}
	var out struct {
		Restored quarantinedView `json:"restored"`
	}
	err := a.call(ctx, http.MethodPost, "/v1/quarantine/"+strconv.FormatInt(id, 10)+"/restore", in, &out)
	return out.Restored, err
}

func (a *apiSource) Discard(ctx context.Context, id int64) (quarantinedView, error) {
	var out struct {
		Discarded quarantinedView `json:"discarded"`
	}
	err := a.call(ctx, http.MethodDelete, "/v1/quarantine/"+strconv.FormatInt(id, 10), nil, &out)
	return out.Discarded, err
}

// storeSource is a daemon's store: a data folder's SQLite store or a
// PostgreSQL database.
type storeSource struct {
	store     store
	catalogue *server.Catalogue // for seal's billing units
}

func (s *storeSource) Close() error { return s.store.Close() }

func parseProvider(v string) (marketplace.CloudProvider, error) {
	p := marketplace.CloudProvider(v)
	if !p.Valid() {
		return "", fmt.Errorf("setting -provider: %q is not one of aws, azure, gcp", v)
	}
	return p, nil
}

func (s *storeSource) Subscriptions(ctx context.Context, prov, state string) ([]subView, error) {
	f := marketplace.SubscriptionFilter{Status: state}
	if prov != "" {
		p, err := parseProvider(prov)
		if err != nil {
			return nil, err
		}
		f.Provider = p
	}
	subs, err := s.store.ListSubscriptions(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]subView, 0, len(subs))
	for i := range subs {
		out = append(out, server.ViewSubscription(&subs[i]))
	}
	return out, nil
}

func (s *storeSource) Subscription(ctx context.Context, prov, customer string) (subView, error) {
	p, err := parseProvider(prov)
	if err != nil {
		return subView{}, err
	}
	sub, err := s.store.FindSubscription(ctx, p, customer)
	if errors.Is(err, marketplace.ErrNotFound) {
		return subView{}, fmt.Errorf("no %s subscription for customer %q", p, customer)
	}
	if err != nil {
		return subView{}, err
	}
	return server.ViewSubscription(sub), nil
}

func (s *storeSource) Usage(ctx context.Context, prov, customer string, from, to time.Time) ([]bucketView, error) {
	p, err := parseProvider(prov)
	if err != nil {
		return nil, err
	}
	// Fresh quantities, as the API shows them: what is committed but not
	// yet folded is folded now (the daemon would do the same).
	if _, err := s.store.Fold(ctx); err != nil {
		return nil, err
	}
	bs, err := s.store.Buckets(ctx, ledger.BucketFilter{Provider: p, Customer: customer})
	if err != nil {
		return nil, err
	}
	out := []bucketView{}
	for _, b := range bs {
		if b.Hour.Before(from) || !b.Hour.Before(to) {
			continue
		}
		out = append(out, bucketView{Provider: string(b.Provider), Customer: b.Customer, Dimension: b.Dimension, Hour: b.Hour.UTC(),
			Quantity: b.Quantity, Late: b.Late, Units: b.Units, State: string(b.State), ReportID: b.ReportID,
			RecordID: b.RecordID, Reason: b.Reason, Attempts: b.Attempts})
	}
	return out, nil
}

func (s *storeSource) Seal(ctx context.Context, prov, customer string) (int, error) {
	p, err := parseProvider(prov)
	if err != nil {
		return 0, err
	}
	// Sealing freezes whole billing units: without the daemon's units a
	// tokens_1m bucket would bill every token.
	if s.catalogue == nil {
		return 0, errors.New("setting -catalogue: seal with -data needs the daemon's catalogue (its billing units)")
	}
	led := ledger.New(s.store, ledger.Config{Units: s.catalogue.Units()})
	n, err := led.SealCustomer(ctx, p, customer)
	if cerr := led.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func (s *storeSource) Quarantined(ctx context.Context) ([]quarantinedView, map[string]int64, error) {
	rows, err := s.store.ListQuarantined(ctx, 0)
	if err != nil {
		return nil, nil, err
	}
	counts, err := s.store.CountQuarantined(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Every source, as the API counts them.
	for _, src := range []string{marketplace.QuarantineUsageLog, marketplace.QuarantineInbox} {
		counts[src] += 0
	}
	out := make([]quarantinedView, 0, len(rows))
	for i := range rows {
		out = append(out, server.ViewQuarantined(&rows[i], false))
	}
	return out, counts, nil
}

func (s *storeSource) QuarantinedRow(ctx context.Context, id int64) (quarantinedView, error) {
	row, err := s.store.GetQuarantined(ctx, id)
	if err != nil {
		return quarantinedView{}, notQuarantined(id, err)
	}
	return server.ViewQuarantined(row, true), nil
}

// notQuarantined says an unknown row as the API does; other errors pass.
func notQuarantined(id int64, err error) error {
	if errors.Is(err, marketplace.ErrNotFound) {
		return errors.New(server.NotQuarantined(id))
	}
	return err
}

func (s *storeSource) Restore(ctx context.Context, id int64, data []byte) (quarantinedView, error) {
	row, err := s.store.GetQuarantined(ctx, id)
	if err != nil {
		return quarantinedView{}, notQuarantined(id, err)
	}
	if err := s.store.RestoreQuarantined(ctx, id, data); err != nil {
		if errors.Is(err, marketplace.ErrInvalidInput) {
			return quarantinedView{}, fmt.Errorf("quarantined row %d (%s, %s) stays quarantined: %w", id, row.Source, row.Ref, err)
		}
		return quarantinedView{}, err
	}
	if data != nil {
		row.Data = data
	}
	return server.ViewQuarantined(row, true), nil
}

func (s *storeSource) Discard(ctx context.Context, id int64) (quarantinedView, error) {
	row, err := s.store.DiscardQuarantined(ctx, id)
	if err != nil {
		return quarantinedView{}, notQuarantined(id, err)
	}
	return server.ViewQuarantined(row, true), nil
}

// adminCommand parses an admin command's flags (its own, registered by
// setup, and the shared ones) and opens the source.
func adminCommand(ctx context.Context, name, usage string, args []string, stderr io.Writer, setup func(*flag.FlagSet)) (*adminFlags, adminSource, error) {
	fs := flag.NewFlagSet("marketplaced "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: marketplaced %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	var f adminFlags
	f.register(fs, os.Getenv)
	setup(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	src, err := f.open(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return &f, src, nil
}

// required checks that the named flags were given.
func required(cmd string, vals ...string) error {
	for i := 0; i+1 < len(vals); i += 2 {
		if vals[i+1] == "" {
			return fmt.Errorf("%s: setting -%s: is required", cmd, vals[i])
		}
	}
	return nil
}

// timeRange reads -from and -to (RFC 3339; empty: the defaults).
func timeRange(from, to string, defFrom, defTo time.Time) (time.Time, time.Time, error) {
	f, t := defFrom, defTo
	for _, x := range []struct {
		name, v string
		dst     *time.Time
	}{{"from", from, &f}, {"to", to, &t}} {
		if x.v == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339, x.v)
		if err != nil {
			return f, t, fmt.Errorf("setting -%s: want RFC 3339 such as 2026-12-01T14:00:00Z, got %q", x.name, x.v)
		}
		*x.dst = v
	}
	if !f.Before(t) {
		return f, t, errors.New("setting -from: must be before -to")
	}
	return f, t, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// sortBuckets orders buckets by customer, dimension and hour.
func sortBuckets(bs []bucketView) {
	slices.SortFunc(bs, func(a, b bucketView) int {
		return cmp.Or(strings.Compare(a.Customer, b.Customer), strings.Compare(a.Dimension, b.Dimension), a.Hour.Compare(b.Hour))
	})
}
