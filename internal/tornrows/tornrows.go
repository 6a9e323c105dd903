// Package tornrows is what the stores share in reading around rows they
// cannot read: such a row is moved to the quarantine and the read runs
// again, so one torn row never hides the others.
package tornrows

import "errors"

// Read runs read until it meets no row it cannot read, moving the ones it
// met aside with move between runs. read returns the rows it could read,
// the keys of those it could not, and an error naming them; move returns
// how many it moved (a row mended or deleted meanwhile is not moved). After
// two runs in a row that moved nothing, Read stops and returns read's
// error, if any: the rows it keeps meeting are not torn for move.
func Read[T, K any](read func() ([]T, []K, error), move func(keys ...K) (int, error)) ([]T, error) {
	for stalled := 0; ; {
		out, torn, err := read()
		if len(torn) == 0 || stalled == 2 {
			if err != nil {
				return nil, err
			}
			return out, nil
		}
		moved, qerr := move(torn...)
		if qerr != nil {
			return nil, errors.Join(err, qerr)
		}
		if moved > 0 {
			stalled = 0
		} else {
			stalled++
		}
	}
}
