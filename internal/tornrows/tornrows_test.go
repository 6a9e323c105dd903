package tornrows

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

func TestRead(t *testing.T) {
	errTorn := errors.New("torn rows")
	for _, tc := range []struct {
		name      string
		torn      []int // torn rows present before each run
		movable   bool  // whether move moves them
		wantRuns  int
		wantErr   bool
		moveFails bool
	}{
		{"clean", nil, true, 1, false, false},
		{"torn then moved", []int{1}, true, 2, false, false},
		{"never movable stops after two stalled runs", []int{1}, false, 3, true, false},
		{"move fails", []int{1}, true, 1, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			torn := slices.Clone(tc.torn)
			runs := 0
			read := func() ([]string, []int, error) {
				runs++
				if len(torn) > 0 {
					return []string{"good"}, slices.Clone(torn), errTorn
				}
				return []string{"good", "other"}, nil, nil
			}
			move := func(keys ...int) (int, error) {
				if tc.moveFails {
					return 0, errors.New("store down")
				}
				if !tc.movable {
					return 0, nil
				}
				torn = nil
				return len(keys), nil
			}
			out, err := Read(read, move)
			if runs != tc.wantRuns || (err != nil) != tc.wantErr {
				t.Fatalf("runs %d err %v, want %d runs, error %v", runs, err, tc.wantRuns, tc.wantErr)
			}
			if !tc.wantErr && len(out) != 2 {
				t.Fatalf("out = %v, want the rows of the clean run", out)
			}
			if tc.wantErr && !tc.moveFails && !errors.Is(err, errTorn) {
				t.Fatalf("err = %v, want the read's error", err)
			}
		})
	}
}

func TestGet(t *testing.T) {
	torn := fmt.Errorf("%w: torn column", marketplace.ErrInvalidInput)
	for _, tc := range []struct {
		name      string
		reads     []error // what each read returns, in turn
		moved     int     // what move answers
		moveErr   error
		wantReads int
		wantIs    error // the error Get returns wraps it; nil: no error
	}{
		{"readable", []error{nil}, 1, nil, 1, nil},
		{"missing", []error{marketplace.ErrNotFound}, 1, nil, 1, marketplace.ErrNotFound},
		{"torn and moved: not found", []error{torn}, 1, nil, 1, marketplace.ErrNotFound},
		{"torn, mended before the move: read again", []error{torn, nil}, 0, nil, 2, nil},
		{"flips between torn and mended: three reads", []error{torn, torn, torn}, 0, nil, 3, marketplace.ErrInvalidInput},
		{"move fails", []error{torn}, 0, errors.New("disk full"), 1, marketplace.ErrInvalidInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			v, err := Get(func() (string, int, error) {
				err := tc.reads[min(reads, len(tc.reads)-1)]
				reads++
				if err != nil {
					return "", 7, err
				}
				return "row", 7, nil
			}, func(k int) (int, error) {
				if k != 7 {
					t.Errorf("move got key %d, want 7", k)
				}
				return tc.moved, tc.moveErr
			})
			if reads != tc.wantReads {
				t.Errorf("%d reads, want %d", reads, tc.wantReads)
			}
			switch {
			case tc.wantIs == nil && (err != nil || v != "row"):
				t.Errorf("Get = %q, %v; want the row", v, err)
			case tc.wantIs != nil && !errors.Is(err, tc.wantIs):
				t.Errorf("Get error %v, want one wrapping %v", err, tc.wantIs)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	entry := ledger.EncodeDeltas(nil, []ledger.Delta{{BucketKey: ledger.BucketKey{SeriesKey: ledger.SeriesKey{
		Provider: marketplace.AWS, Customer: "c", Dimension: "d"}, Hour: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, Quantity: 5}})
	flipped := slices.Clone(entry)
	flipped[len(flipped)-1] ^= 1
	row, err := json.Marshal(marketplace.InboxRowOf(marketplace.Notification{Provider: marketplace.AWS, ID: "n1", Kind: "k",
		State: "pending", Received: time.UnixMilli(1000)}))
	if err != nil {
		t.Fatal(err)
	}
	torn := []byte(strings.Replace(string(row), `"attempts":"0"`, `"attempts":"-1"`, 1))
	errPut := errors.New("disk full")
	for _, tc := range []struct {
		name      string
		source    string
		stored    []byte // q.Data
		data      []byte // the mended copy given, nil for q.Data
		again     bool   // putRow finds the notification in the inbox
		putFails  bool
		wantPut   string // "entry", "row" or "" (nothing put)
		wantErr   string // "" for none
		wantInval bool
	}{
		{"entry as stored", marketplace.QuarantineUsageLog, entry, nil, false, false, "entry", "", false},
		{"entry mended", marketplace.QuarantineUsageLog, flipped, entry, false, false, "entry", "", false},
		{"entry still damaged", marketplace.QuarantineUsageLog, flipped, nil, false, false, "", "checksum", true},
		{"entry put fails", marketplace.QuarantineUsageLog, entry, nil, false, true, "entry", "disk full", false},
		{"row mended", marketplace.QuarantineInbox, torn, row, false, false, "row", "", false},
		{"row still torn", marketplace.QuarantineInbox, torn, nil, false, false, "", "column attempts", true},
		{"row not JSON", marketplace.QuarantineInbox, []byte("{"), nil, false, false, "", "inbox row", true},
		{"row in the inbox again", marketplace.QuarantineInbox, row, nil, true, false, "row", "aws/n1 is in the inbox again", true},
		{"row put fails", marketplace.QuarantineInbox, row, nil, false, true, "row", "disk full", false},
		{"unknown source", "elsewhere", entry, nil, false, false, "", `unknown source "elsewhere"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var put string
			var putData []byte
			err := Restore(marketplace.Quarantined{Source: tc.source, Data: tc.stored}, tc.data,
				func(b []byte) error {
					put, putData = "entry", b
					if tc.putFails {
						return errPut
					}
					return nil
				},
				func(n marketplace.Notification) (bool, error) {
					put = "row"
					if n.ID != "n1" || n.Attempts != 0 {
						t.Errorf("putRow got %+v", n)
					}
					if tc.putFails {
						return false, errPut
					}
					return !tc.again, nil
				})
			if put != tc.wantPut {
				t.Errorf("put %q, want %q", put, tc.wantPut)
			}
			if put == "entry" && err == nil && !slices.Equal(putData, entry) {
				t.Errorf("put entry %x, want %x", putData, entry)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Restore: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Restore = %v, want an error naming %q", err, tc.wantErr)
			}
			if got := errors.Is(err, marketplace.ErrInvalidInput); got != tc.wantInval {
				t.Errorf("errors.Is(%v, ErrInvalidInput) = %v, want %v", err, got, tc.wantInval)
			}
			if tc.putFails && !errors.Is(err, errPut) {
				t.Errorf("%v does not wrap the put's error", err)
			}
		})
	}
}
