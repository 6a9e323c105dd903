package tornrows

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/saasmarket/marketplace"
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
