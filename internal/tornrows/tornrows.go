// Package tornrows is what the stores share in reading around rows they
// cannot read: such a row is moved to the quarantine and the read runs
// again, so one torn row never hides the others; and in putting a mended
// row back.
package tornrows

import (
	"errors"
	"fmt"

	"github.com/saasmarket/marketplace"
	"github.com/saasmarket/marketplace/ledger"
)

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

// Get reads one row with read, which returns the value, the row's key and,
// for a row it cannot read, an error wrapping marketplace.ErrInvalidInput.
// Such a row is moved aside with move, and is then not found: the error
// wraps marketplace.ErrNotFound and says why. A row mended before move
// looked again (move moved nothing) is read again, three reads at most, so
// that a row flipping between the two cannot loop.
func Get[T, K any](read func() (T, K, error), move func(K) (int, error)) (T, error) {
	for try := 1; ; try++ {
		v, key, err := read()
		if !errors.Is(err, marketplace.ErrInvalidInput) || try == 3 {
			return v, err
		}
		var zero T
		moved, qerr := move(key)
		if qerr != nil {
			return zero, errors.Join(err, qerr)
		}
		if moved == 1 {
			return zero, fmt.Errorf("%w: its row could not be read and was moved to the quarantine: %v", marketplace.ErrNotFound, err)
		}
	}
}

// Restore checks data, the mended copy of quarantined row q (q.Data when
// nil), and puts it back where q came from: a usage-log entry that
// ledger.CheckEntry accepts goes to putEntry, an inbox row that
// marketplace.ParseInboxRow reads goes to putRow, which reports whether it
// inserted it (false: that notification is in the inbox again). Whatever
// cannot go back is an error wrapping marketplace.ErrInvalidInput, and
// nothing is put. The caller deletes q in the same transaction.
func Restore(q marketplace.Quarantined, data []byte, putEntry func([]byte) error, putRow func(marketplace.Notification) (bool, error)) error {
	if data == nil {
		data = q.Data
	}
	switch q.Source {
	case marketplace.QuarantineUsageLog:
		if err := ledger.CheckEntry(data); err != nil {
			return fmt.Errorf("%w: %w", marketplace.ErrInvalidInput, err)
		}
		return putEntry(data)
	case marketplace.QuarantineInbox:
		n, err := marketplace.ParseInboxRow(data)
		if err != nil {
			return err
		}
		inserted, err := putRow(n)
		if err == nil && !inserted {
			err = fmt.Errorf("%w: notification %s/%s is in the inbox again", marketplace.ErrInvalidInput, n.Provider, n.ID)
		}
		return err
	default:
		return fmt.Errorf("%w: unknown source %q", marketplace.ErrInvalidInput, q.Source)
	}
}
