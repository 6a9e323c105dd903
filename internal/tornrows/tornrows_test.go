package tornrows

import (
	"errors"
	"slices"
	"testing"
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
