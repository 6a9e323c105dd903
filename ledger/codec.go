package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/saasmarket/marketplace"
)

// The append log stores each group commit as one blob of deltas, so that a
// commit costs one row however many records it carries. The format is
// private to the ledger and its stores:
//
//	version byte (1), count uvarint, then per delta:
//	provider, customer, dimension (uvarint length + bytes), hour (varint unix seconds), quantity (uvarint)

const codecVersion = 1

// ErrCorruptLog is returned when a stored log entry cannot be decoded.
var ErrCorruptLog = errors.New("ledger: corrupt log entry")

// EncodeDeltas appends the encoding of deltas to dst.
func EncodeDeltas(dst []byte, deltas []Delta) []byte {
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(deltas)))
	for _, d := range deltas {
		dst = appendString(dst, string(d.Provider))
		dst = appendString(dst, d.Customer)
		dst = appendString(dst, d.Dimension)
		dst = binary.AppendVarint(dst, d.Hour.Unix())
		dst = binary.AppendUvarint(dst, uint64(d.Quantity))
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeDeltas decodes a log entry written by EncodeDeltas and appends its
// deltas to dst.
func DecodeDeltas(dst []Delta, b []byte) ([]Delta, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return dst, fmt.Errorf("%w: unknown version", ErrCorruptLog)
	}
	r := reader{b: b[1:]}
	n := r.uvarint()
	// Every delta takes at least 5 bytes; a larger count is corrupt.
	if r.err == nil && n > uint64(len(r.b))/5 {
		return dst, fmt.Errorf("%w: count %d exceeds entry size", ErrCorruptLog, n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		var d Delta
		d.Provider = marketplace.CloudProvider(r.str())
		d.Customer = r.str()
		d.Dimension = r.str()
		d.Hour = time.Unix(r.varint(), 0).UTC()
		q := r.uvarint()
		if q > maxQuantity {
			r.fail("quantity out of range")
		}
		d.Quantity = int64(q)
		if r.err == nil {
			dst = append(dst, d)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return dst, r.err
	}
	return dst, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorruptLog, what)
	}
	r.b = nil
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail("string longer than entry")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
