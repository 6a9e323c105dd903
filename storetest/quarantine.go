package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

// DamageKind says what Harness.Damage does to a database.
type DamageKind string

const (
	// DamageAppendRaw appends Damage.Entry to the append log as it is (as
	// an old or foreign writer, or a bad manual edit, would), bypassing
	// the ledger's encoder.
	DamageAppendRaw DamageKind = "append a raw log entry"
	// DamageFlipLogByte rewrites the newest entry of the append log as
	// Damage.Flip returns it: one bit flipped, as a disk fault would.
	DamageFlipLogByte DamageKind = "flip a bit of the newest log entry"
	// DamageInboxColumn sets column Damage.Column of the inbox row
	// (Damage.Provider, Damage.ID) to the text Damage.Value, converted by
	// the database as it converts a quoted literal ('-5' into an integer
	// column).
	DamageInboxColumn DamageKind = "set an inbox column"
)

// Damage is one way of damaging stored rows; Kind says which fields count.
type Damage struct {
	Kind DamageKind
	// Entry is the raw log entry of DamageAppendRaw.
	Entry []byte
	// Byte is the index of the byte DamageFlipLogByte flips, counted from
	// the end when negative (-1 is the last byte).
	Byte int
	// Provider, ID, Column and Value are DamageInboxColumn's.
	Provider marketplace.CloudProvider
	ID       string
	Column   string
	Value    string
}

// Flip returns a copy of entry with bit 0 of byte d.Byte flipped. Flipping
// twice gives entry back.
func (d Damage) Flip(entry []byte) []byte {
	out := bytes.Clone(entry)
	i := d.Byte
	if i < 0 {
		i += len(out)
	}
	if i >= 0 && i < len(out) {
		out[i] ^= 1
	}
	return out
}

func runQuarantine(t *testing.T, h Harness) {
	if h.Damage == nil {
		t.Fatal("Harness.Damage is nil: a store must show that it quarantines rows damaged on disk")
	}
	t.Run("LogEntries", func(t *testing.T) { runQuarantineLog(t, h) })
	t.Run("InboxRows", func(t *testing.T) { runQuarantineInbox(t, h) })
	t.Run("Discard", func(t *testing.T) { runQuarantineDiscard(t, h) })
}

// quarantinedBySource lists the quarantine and checks what every row must
// hold.
func quarantinedBySource(t *testing.T, s Store, source string) []marketplace.Quarantined {
	t.Helper()
	all, err := s.ListQuarantined(t.Context(), 0)
	if err != nil {
		t.Fatalf("ListQuarantined: %v", err)
	}
	var out []marketplace.Quarantined
	for i, q := range all {
		if i > 0 && q.ID <= all[i-1].ID {
			t.Errorf("ListQuarantined is not oldest first: id %d after %d", q.ID, all[i-1].ID)
		}
		if q.Ref == "" || q.Reason == "" || q.At.IsZero() {
			t.Errorf("quarantined row without ref, reason or time: %+v", q)
		}
		if q.Source == source {
			out = append(out, q)
		}
	}
	counts, err := s.CountQuarantined(t.Context())
	if err != nil {
		t.Fatalf("CountQuarantined: %v", err)
	}
	if counts[source] != int64(len(out)) {
		t.Errorf("CountQuarantined()[%s] = %d, want %d (counts %v)", source, counts[source], len(out), counts)
	}
	return out
}

func wantReasons(t *testing.T, qs []marketplace.Quarantined, want ...string) {
	t.Helper()
	if len(qs) != len(want) {
		t.Fatalf("%d quarantined rows %+v, want %d with reasons %q", len(qs), qs, len(want), want)
	}
	for i, q := range qs {
		if !strings.Contains(q.Reason, want[i]) {
			t.Errorf("quarantined row %d (%s): reason %q does not say %q", q.ID, q.Ref, q.Reason, want[i])
		}
	}
}

func runQuarantineLog(t *testing.T, h Harness) {
	e := newEnv(t, h, ledger.Config{})
	ctx := t.Context()
	damage := func(d Damage) {
		t.Helper()
		h.Damage(t, e.db, d)
	}
	quantities := func() map[string]int64 {
		t.Helper()
		out := map[string]int64{}
		for _, b := range e.buckets(ledger.BucketFilter{}) {
			out[b.Customer] += b.Quantity
		}
		return out
	}
	wantQuantities := func(want map[string]int64) {
		t.Helper()
		got := quantities()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("quantities per customer = %v, want %v", got, want)
		}
	}
	entry := func(p marketplace.CloudProvider, cust string, q int64) []byte {
		return ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: ledger.BucketKey{
			SeriesKey: ledger.SeriesKey{Provider: p, Customer: cust, Dimension: "req"}, Hour: ledger.HourOf(t0)}, Quantity: q}})
	}

	// Damaged entries among good ones: each damaged one is moved aside
	// with its reason, every good one is folded, before and after them.
	e.ingest(rec("aws", "c1", "req", 5, t0, ""))
	foreign := entry("ibm", "c2", 7)
	garbage := []byte{9, 1, 2, 3}
	damage(Damage{Kind: DamageAppendRaw, Entry: foreign})
	damage(Damage{Kind: DamageAppendRaw, Entry: garbage})
	e.ingest(rec("aws", "c3", "req", 3, t0, ""))
	// Byte -5 is the quantity of c3's one delta (the checksum's 4 bytes
	// follow it): 3 becomes 2, which decodes as well as 3 did.
	flip := Damage{Kind: DamageFlipLogByte, Byte: -5}
	damage(flip)
	e.ingest(rec("aws", "c4", "req", 4, t0, ""))
	wantQuantities(map[string]int64{"c1": 5, "c4": 4})
	qs := quarantinedBySource(t, e.store, marketplace.QuarantineUsageLog)
	wantReasons(t, qs, "unknown cloud", "unknown version", "checksum")
	if !bytes.Equal(qs[0].Data, foreign) || !bytes.Equal(qs[1].Data, garbage) || !bytes.Equal(flip.Flip(qs[2].Data), entry("aws", "c3", 3)) {
		t.Errorf("quarantined data is not the stored entries: %x, %x, %x", qs[0].Data, qs[1].Data, qs[2].Data)
	}
	if page, err := e.store.ListQuarantined(ctx, 2); err != nil || len(page) != 2 || page[0].ID != qs[0].ID {
		t.Errorf("ListQuarantined(2) = %+v, %v; want the oldest 2", page, err)
	}
	if got, err := e.store.GetQuarantined(ctx, qs[1].ID); err != nil || got.Source != marketplace.QuarantineUsageLog || !bytes.Equal(got.Data, garbage) || got.Reason != qs[1].Reason {
		t.Errorf("GetQuarantined(%d) = %+v, %v; want %+v", qs[1].ID, got, err, qs[1])
	}
	// Folding again finds nothing more: the damaged entries left the log.
	wantQuantities(map[string]int64{"c1": 5, "c4": 4})

	// Restore: still-bad data is refused and the row kept; mended data is
	// folded once and the row leaves the quarantine.
	unknown := qs[2].ID + 1000
	if err := e.store.RestoreQuarantined(ctx, unknown, nil); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("RestoreQuarantined(unknown id): %v, want ErrNotFound", err)
	}
	if _, err := e.store.GetQuarantined(ctx, unknown); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("GetQuarantined(unknown id): %v, want ErrNotFound", err)
	}
	for _, tc := range []struct {
		q    marketplace.Quarantined
		data []byte
	}{
		{qs[1], nil},                       // as stored: still garbage
		{qs[1], []byte{2, 1}},              // other garbage
		{qs[0], nil},                       // still an unknown cloud
		{qs[2], entry("aws", "c3", 3)[:8]}, // truncated
	} {
		if err := e.store.RestoreQuarantined(ctx, tc.q.ID, tc.data); !errors.Is(err, marketplace.ErrInvalidInput) {
			t.Errorf("RestoreQuarantined(%s, %x): %v, want ErrInvalidInput", tc.q.Ref, tc.data, err)
		}
	}
	wantReasons(t, quarantinedBySource(t, e.store, marketplace.QuarantineUsageLog), "unknown cloud", "unknown version", "checksum")
	wantQuantities(map[string]int64{"c1": 5, "c4": 4})

	must(t, e.store.RestoreQuarantined(ctx, qs[2].ID, flip.Flip(qs[2].Data)))
	must(t, e.store.RestoreQuarantined(ctx, qs[0].ID, entry("aws", "c2", 7)))
	if err := e.store.RestoreQuarantined(ctx, qs[2].ID, flip.Flip(qs[2].Data)); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("second restore of %s: %v, want ErrNotFound", qs[2].Ref, err)
	}
	if _, err := e.store.GetQuarantined(ctx, qs[2].ID); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("GetQuarantined of a restored row: %v, want ErrNotFound", err)
	}
	wantReasons(t, quarantinedBySource(t, e.store, marketplace.QuarantineUsageLog), "unknown version")
	wantQuantities(map[string]int64{"c1": 5, "c2": 7, "c3": 3, "c4": 4})
	wantQuantities(map[string]int64{"c1": 5, "c2": 7, "c3": 3, "c4": 4}) // exactly once

	// Seal folds too: a damaged entry does not stop it.
	e.ingest(rec("aws", "c5", "req", 2, t0, ""))
	damage(Damage{Kind: DamageAppendRaw, Entry: []byte{}})
	e.clock.Set(t0.Add(time.Hour))
	if n := e.seal(); n != 5 {
		t.Errorf("Seal sealed %d buckets, want 5 (c1..c5 at 10:00)", n)
	}
	for _, b := range e.buckets(ledger.BucketFilter{}) {
		if b.State != ledger.StateSealed {
			t.Errorf("bucket %s is %s after the seal", b.BucketKey, b.State)
		}
	}
	wantQuantities(map[string]int64{"c1": 5, "c2": 7, "c3": 3, "c4": 4, "c5": 2})
	wantReasons(t, quarantinedBySource(t, e.store, marketplace.QuarantineUsageLog), "unknown version", "empty")
}

func runQuarantineInbox(t *testing.T, h Harness) {
	db := h.NewDB(t)
	s := h.Open(t, db)
	ctx := t.Context()
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	note := func(i int) marketplace.Notification {
		return marketplace.Notification{Provider: "aws", ID: fmt.Sprintf("n-%d", i), Kind: "subscribe", Subject: "s",
			Time: ts.Add(time.Duration(i) * time.Minute), Payload: fmt.Appendf(nil, `{"i":%d}`, i), Received: ts, Expires: ts.Add(7 * 24 * time.Hour)}
	}
	for i := 1; i <= 5; i++ {
		if _, err := s.AddNotification(ctx, note(i)); err != nil {
			t.Fatal(err)
		}
	}
	h.Damage(t, db, Damage{Kind: DamageInboxColumn, Provider: "aws", ID: "n-2", Column: "event_time", Value: "-5"})
	h.Damage(t, db, Damage{Kind: DamageInboxColumn, Provider: "aws", ID: "n-4", Column: "attempts", Value: "-1"})

	// A claim moves the torn rows aside and returns the others, up to
	// its limit: n-2 sorts first (its event time is -5 ms).
	claim := func(owner string, limit int) []string {
		t.Helper()
		got, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: owner, Now: ts.Add(time.Hour), Lease: time.Hour, Limit: limit})
		if err != nil {
			t.Fatalf("ClaimNotifications: %v", err)
		}
		var ids []string
		for _, n := range got {
			ids = append(ids, n.ID)
		}
		return ids
	}
	if got := claim("w1", 3); fmt.Sprint(got) != "[n-1 n-3 n-5]" {
		t.Errorf("claim with torn rows = %v, want [n-1 n-3 n-5]", got)
	}
	qs := quarantinedBySource(t, s, marketplace.QuarantineInbox)
	wantReasons(t, qs, "event_time", "attempts")
	for i, want := range []string{"aws/n-2", "aws/n-4"} {
		if qs[i].Ref != want {
			t.Errorf("quarantined row %d: ref %q, want %q", i, qs[i].Ref, want)
		}
	}
	var row marketplace.InboxRow
	if err := json.Unmarshal(qs[0].Data, &row); err != nil || row.ID != "n-2" || row.Time != "-5" || string(row.Payload) != `{"i":2}` || row.State != marketplace.NotificationPending {
		t.Fatalf("quarantined data %s: %+v, %v; want n-2's InboxRow as stored", qs[0].Data, row, err)
	}
	if _, err := s.GetNotification(ctx, "aws", "n-2"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("GetNotification of a quarantined row: %v; want ErrNotFound", err)
	}
	if all, err := s.ListNotifications(ctx, "", "", 0); err != nil || len(all) != 3 {
		t.Errorf("ListNotifications after the claim: %d, %v; want the 3 good ones", len(all), err)
	}

	// Restore: as stored it is still torn; mended, it is claimable again.
	if err := s.RestoreQuarantined(ctx, qs[0].ID, nil); !errors.Is(err, marketplace.ErrInvalidInput) {
		t.Errorf("RestoreQuarantined of a still torn row: %v; want ErrInvalidInput", err)
	}
	if err := s.RestoreQuarantined(ctx, qs[0].ID, []byte(`{"provider":`)); !errors.Is(err, marketplace.ErrInvalidInput) {
		t.Errorf("RestoreQuarantined with broken JSON: %v; want ErrInvalidInput", err)
	}
	if _, err := s.GetQuarantined(ctx, qs[0].ID); err != nil {
		t.Errorf("a refused restore lost the row: %v", err)
	}
	row.Time = strconv.FormatInt(note(2).Time.UnixMilli(), 10)
	mended, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.RestoreQuarantined(ctx, qs[0].ID, mended))
	if got, err := s.GetNotification(ctx, "aws", "n-2"); err != nil || !got.Time.Equal(note(2).Time) || string(got.Payload) != `{"i":2}` || got.State != marketplace.NotificationPending {
		t.Errorf("restored notification: %+v, %v", got, err)
	}
	if got := claim("w2", 10); fmt.Sprint(got) != "[n-2]" {
		t.Errorf("claim after the restore = %v, want [n-2] (the others are leased to w1)", got)
	}
	if err := s.RestoreQuarantined(ctx, qs[0].ID, mended); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("second restore: %v; want ErrNotFound", err)
	}

	// A notification delivered again while its torn row was quarantined is
	// in the inbox again: restoring the row would apply it twice.
	if first, err := s.AddNotification(ctx, note(4)); err != nil || !first {
		t.Fatalf("redelivery of n-4: %v, %v", first, err)
	}
	if err := json.Unmarshal(qs[1].Data, &row); err != nil {
		t.Fatal(err)
	}
	row.Attempts = "0"
	if mended, err = json.Marshal(row); err != nil {
		t.Fatal(err)
	}
	if err := s.RestoreQuarantined(ctx, qs[1].ID, mended); !errors.Is(err, marketplace.ErrInvalidInput) {
		t.Errorf("restore of a notification in the inbox again: %v; want ErrInvalidInput", err)
	}
	wantReasons(t, quarantinedBySource(t, s, marketplace.QuarantineInbox), "attempts")

	t.Run("DoneAndParked", func(t *testing.T) { runQuarantineSettled(t, h) })
}

// runQuarantineSettled: a done or parked row that cannot be read (no claim
// reads it) is quarantined by the list or get that reads it, and the
// others are listed as if it were not there.
func runQuarantineSettled(t *testing.T, h Harness) {
	db := h.NewDB(t)
	s := h.Open(t, db)
	ctx := t.Context()
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// n-1..n-5 on aws, n-6 on gcp; odd ones done, even ones parked.
	for i := 1; i <= 6; i++ {
		p := marketplace.CloudProvider("aws")
		if i == 6 {
			p = "gcp"
		}
		if _, err := s.AddNotification(ctx, marketplace.Notification{Provider: p, ID: fmt.Sprintf("n-%d", i), Kind: "subscribe",
			Subject: "s", Time: ts.Add(time.Duration(i) * time.Minute), Payload: fmt.Appendf(nil, `{"i":%d}`, i), Received: ts,
			Expires: ts.Add(7 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	claimed, err := s.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: "w", Now: ts, Lease: time.Hour, Limit: 10})
	if err != nil || len(claimed) != 6 {
		t.Fatalf("ClaimNotifications: %d, %v; want all 6", len(claimed), err)
	}
	for i, n := range claimed {
		n.State, n.Attempts, n.Expires = marketplace.NotificationDone, 1, ts.Add(30*24*time.Hour)
		if i%2 == 1 {
			n.State, n.Reason = marketplace.NotificationParked, "no such plan"
		}
		must(t, s.SettleNotification(ctx, "w", n))
	}
	h.Damage(t, db, Damage{Kind: DamageInboxColumn, Provider: "aws", ID: "n-2", Column: "event_time", Value: "-5"}) // parked
	h.Damage(t, db, Damage{Kind: DamageInboxColumn, Provider: "aws", ID: "n-3", Column: "attempts", Value: "-1"})   // done
	h.Damage(t, db, Damage{Kind: DamageInboxColumn, Provider: "gcp", ID: "n-6", Column: "expires", Value: "-7"})    // parked

	list := func(p marketplace.CloudProvider, state string, limit int) string {
		t.Helper()
		ns, err := s.ListNotifications(ctx, p, state, limit)
		if err != nil {
			t.Fatalf("ListNotifications(%q, %q, %d): %v", p, state, limit, err)
		}
		var ids []string
		for _, n := range ns {
			ids = append(ids, string(n.Provider)+"/"+n.ID+":"+n.State)
		}
		return fmt.Sprint(ids)
	}
	refs := func(want ...string) []marketplace.Quarantined {
		t.Helper()
		qs := quarantinedBySource(t, s, marketplace.QuarantineInbox)
		var got []string
		for _, q := range qs {
			got = append(got, q.Ref)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("quarantined inbox rows %v, want %v", got, want)
		}
		return qs
	}

	// The torn parked row sorts first (by id): with a limit of one the
	// list still holds a parked notification, the next one.
	if got, want := list("aws", marketplace.NotificationParked, 1), "[aws/n-4:parked]"; got != want {
		t.Errorf("first parked notification = %s, want %s", got, want)
	}
	refs("aws/n-2")
	if got, want := list("aws", "", 0), "[aws/n-1:done aws/n-4:parked aws/n-5:done]"; got != want {
		t.Errorf("aws notifications = %s, want %s", got, want)
	}
	refs("aws/n-2", "aws/n-3")

	// Get of a torn row quarantines it too; the notification is not found.
	if _, err := s.GetNotification(ctx, "gcp", "n-6"); !errors.Is(err, marketplace.ErrNotFound) || !strings.Contains(err.Error(), "n-6") ||
		!strings.Contains(err.Error(), "quarantine") {
		t.Errorf("GetNotification of a torn row: %v; want ErrNotFound naming gcp/n-6 and the quarantine", err)
	}
	if _, err := s.GetNotification(ctx, "gcp", "n-6"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("GetNotification of a quarantined row: %v; want ErrNotFound", err)
	}
	qs := refs("aws/n-2", "aws/n-3", "gcp/n-6")
	wantReasons(t, qs, "event_time", "attempts", "expires")
	if got, want := list("", "", 0), "[aws/n-1:done aws/n-4:parked aws/n-5:done]"; got != want {
		t.Errorf("all notifications = %s, want %s", got, want)
	}

	// Each is kept as stored, state and all, and restored as it was mended.
	for i, col := range []string{"event_time", "attempts", "expires"} {
		var row marketplace.InboxRow
		if err := json.Unmarshal(qs[i].Data, &row); err != nil {
			t.Fatalf("quarantined data %s: %v", qs[i].Data, err)
		}
		wantState := map[bool]string{true: marketplace.NotificationParked, false: marketplace.NotificationDone}[i != 1]
		if row.State != wantState || string(row.Payload) != fmt.Sprintf(`{"i":%s}`, strings.TrimPrefix(row.ID, "n-")) {
			t.Errorf("quarantined row %s: %+v; want it %s with its payload", qs[i].Ref, row, wantState)
		}
		switch col {
		case "event_time":
			row.Time = strconv.FormatInt(ts.Add(2*time.Minute).UnixMilli(), 10)
		case "attempts":
			row.Attempts = "1"
		case "expires":
			row.Expires = strconv.FormatInt(ts.Add(30*24*time.Hour).UnixMilli(), 10)
		}
		mended, err := json.Marshal(row)
		if err != nil {
			t.Fatal(err)
		}
		must(t, s.RestoreQuarantined(ctx, qs[i].ID, mended))
	}
	refs()
	if got, want := list("", "", 0), "[aws/n-1:done aws/n-2:parked aws/n-3:done aws/n-4:parked aws/n-5:done gcp/n-6:parked]"; got != want {
		t.Errorf("notifications after the restores = %s, want %s", got, want)
	}
	if got, err := s.GetNotification(ctx, "aws", "n-2"); err != nil || got.Reason != "no such plan" || !got.Time.Equal(ts.Add(2*time.Minute)) {
		t.Errorf("restored parked notification: %+v, %v", got, err)
	}
	must(t, s.RequeueNotification(ctx, "aws", "n-2", ts.Add(time.Hour)))
}

// runQuarantineDiscard: an operator discards rows that will never be
// mended. Each leaves the quarantine (list, get and count) in one commit
// and is returned as it was; its usage is never billed and its
// notification never applied, however it is asked for again, and the
// other rows, quarantined or not, are untouched.
func runQuarantineDiscard(t *testing.T, h Harness) {
	e := newEnv(t, h, ledger.Config{})
	ctx := t.Context()
	entry := func(cust string, q int64) []byte {
		return ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: ledger.BucketKey{
			SeriesKey: ledger.SeriesKey{Provider: "aws", Customer: cust, Dimension: "req"}, Hour: ledger.HourOf(t0)}, Quantity: q}})
	}

	// The usage log: c2's entry with a flipped bit (the quantity, as in
	// runQuarantineLog) and garbage, among c1's and c3's good entries.
	e.ingest(rec("aws", "c1", "req", 5, t0, ""))
	e.ingest(rec("aws", "c2", "req", 3, t0, ""))
	h.Damage(t, e.db, Damage{Kind: DamageFlipLogByte, Byte: -5})
	h.Damage(t, e.db, Damage{Kind: DamageAppendRaw, Entry: []byte{9, 1, 2, 3}})
	e.ingest(rec("aws", "c3", "req", 4, t0, ""))
	quantities := func() string {
		t.Helper()
		out := map[string]int64{}
		for _, b := range e.buckets(ledger.BucketFilter{}) {
			out[b.Customer] += b.Quantity
		}
		return fmt.Sprint(out)
	}
	if got, want := quantities(), "map[c1:5 c3:4]"; got != want {
		t.Fatalf("quantities per customer with 2 damaged entries = %s, want %s", got, want)
	}

	// The inbox: n-2 of three notifications torn, and quarantined by the
	// claim that meets it.
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := 1; i <= 3; i++ {
		if _, err := e.store.AddNotification(ctx, marketplace.Notification{Provider: "aws", ID: fmt.Sprintf("n-%d", i), Kind: "subscribe",
			Subject: "s", Time: ts.Add(time.Duration(i) * time.Minute), Payload: fmt.Appendf(nil, `{"i":%d}`, i), Received: ts,
			Expires: ts.Add(7 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	h.Damage(t, e.db, Damage{Kind: DamageInboxColumn, Provider: "aws", ID: "n-2", Column: "attempts", Value: "-1"})
	claim := func(owner string, now time.Time) string {
		t.Helper()
		got, err := e.store.ClaimNotifications(ctx, marketplace.NotificationClaim{Owner: owner, Now: now, Lease: time.Minute, Limit: 10})
		if err != nil {
			t.Fatalf("ClaimNotifications: %v", err)
		}
		var ids []string
		for _, n := range got {
			ids = append(ids, n.ID)
		}
		return fmt.Sprint(ids)
	}
	if got := claim("w1", ts.Add(time.Hour)); got != "[n-1 n-3]" {
		t.Fatalf("claim with n-2 torn = %s, want [n-1 n-3]", got)
	}

	logRows := quarantinedBySource(t, e.store, marketplace.QuarantineUsageLog)
	wantReasons(t, logRows, "checksum", "unknown version")
	inboxRows := quarantinedBySource(t, e.store, marketplace.QuarantineInbox)
	wantReasons(t, inboxRows, "attempts")
	var torn marketplace.InboxRow
	if err := json.Unmarshal(inboxRows[0].Data, &torn); err != nil {
		t.Fatal(err)
	}
	torn.Attempts = "0"
	mendedRow, err := json.Marshal(torn)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := e.store.DiscardQuarantined(ctx, logRows[1].ID+1000); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("DiscardQuarantined(unknown id): %v, want ErrNotFound", err)
	}
	// Each is discarded in turn; mended is what would have put it back (a
	// restore must not revive a discarded row); left is what the
	// quarantine holds after it.
	for _, tc := range []struct {
		name   string
		q      marketplace.Quarantined
		mended []byte
		left   string
	}{
		{"FlippedEntry", logRows[0], entry("c2", 3), fmt.Sprint([]string{logRows[1].Ref, inboxRows[0].Ref})},
		{"TornInboxRow", inboxRows[0], mendedRow, fmt.Sprint([]string{logRows[1].Ref})},
		{"Garbage", logRows[1], nil, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.store.DiscardQuarantined(ctx, tc.q.ID)
			if err != nil {
				t.Fatalf("DiscardQuarantined(%d): %v", tc.q.ID, err)
			}
			if got.ID != tc.q.ID || got.Source != tc.q.Source || got.Ref != tc.q.Ref || !bytes.Equal(got.Data, tc.q.Data) ||
				got.Reason != tc.q.Reason || !got.At.Equal(tc.q.At) {
				t.Errorf("DiscardQuarantined(%d) = %+v, want the row as it was: %+v", tc.q.ID, got, tc.q)
			}
			if _, err := e.store.GetQuarantined(ctx, tc.q.ID); !errors.Is(err, marketplace.ErrNotFound) {
				t.Errorf("GetQuarantined of a discarded row: %v, want ErrNotFound", err)
			}
			if _, err := e.store.DiscardQuarantined(ctx, tc.q.ID); !errors.Is(err, marketplace.ErrNotFound) {
				t.Errorf("second discard: %v, want ErrNotFound", err)
			}
			for _, data := range [][]byte{nil, tc.mended} {
				if err := e.store.RestoreQuarantined(ctx, tc.q.ID, data); !errors.Is(err, marketplace.ErrNotFound) {
					t.Errorf("restore of a discarded row with %q: %v, want ErrNotFound", data, err)
				}
			}
			// List and count (quarantinedBySource checks the count
			// against the list) hold the others only.
			var left []string
			for _, src := range []string{marketplace.QuarantineUsageLog, marketplace.QuarantineInbox} {
				for _, q := range quarantinedBySource(t, e.store, src) {
					left = append(left, q.Ref)
				}
			}
			if got := fmt.Sprint(left); got != tc.left {
				t.Errorf("quarantined after the discard: %s, want %s", got, tc.left)
			}
		})
	}
	if counts, err := e.store.CountQuarantined(ctx); err != nil || counts[marketplace.QuarantineUsageLog] != 0 || counts[marketplace.QuarantineInbox] != 0 {
		t.Errorf("CountQuarantined after discarding every row = %v, %v; want 0 per source", counts, err)
	}

	// c2's usage is never billed: the hour seals and is claimed for
	// reporting without it, c1's and c3's exactly.
	if got, want := quantities(), "map[c1:5 c3:4]"; got != want {
		t.Errorf("quantities per customer after the discards = %s, want %s", got, want)
	}
	e.clock.Set(t0.Add(time.Hour))
	if n := e.seal(); n != 2 {
		t.Errorf("Seal sealed %d buckets, want 2 (c1 and c3 at 10:00)", n)
	}
	claimed, err := e.store.Claim(ctx, ledger.ClaimRequest{Provider: "aws", Owner: "R", Now: e.clock.Now(), Lease: time.Minute, Limit: 10})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	billed := map[string]int64{}
	for _, b := range claimed {
		billed[b.Customer] += b.Units
	}
	if got, want := fmt.Sprint(billed), "map[c1:5 c3:4]"; got != want {
		t.Errorf("units claimed for reporting = %s, want %s", got, want)
	}

	// n-2 is never applied: not found, and not claimed once the others'
	// lease has run out; they are claimed again as before.
	if _, err := e.store.GetNotification(ctx, "aws", "n-2"); !errors.Is(err, marketplace.ErrNotFound) {
		t.Errorf("GetNotification of a discarded row: %v, want ErrNotFound", err)
	}
	if got := claim("w2", ts.Add(2*time.Hour)); got != "[n-1 n-3]" {
		t.Errorf("claim after the discard = %s, want [n-1 n-3]", got)
	}
	if all, err := e.store.ListNotifications(ctx, "", "", 0); err != nil || len(all) != 2 {
		t.Errorf("ListNotifications after the discard: %d, %v; want n-1 and n-3", len(all), err)
	}
}
