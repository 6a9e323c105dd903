package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/saasmarket/marketplace"
)

// The append log stores each group commit as one blob of deltas, so that a
// commit costs one row however many records it carries. The format is
// private to the ledger and its stores:
//
//	version byte (2), count uvarint, then per delta:
//	provider, customer, dimension (uvarint length + bytes), hour (varint unix seconds), quantity (uvarint)
//	then a CRC-32C of all the bytes before it (4 bytes, little endian)
//
// The checksum makes a damaged row (a flipped bit in a quantity decodes as
// well as the right one) a corrupt entry that the store quarantines,
// instead of a wrong bill. Version 1 is the same without the checksum; it
// is still read.

const (
	codecV1      = 1
	codecVersion = 2
	checksumLen  = 4
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptLog is returned when a stored log entry cannot be decoded.
var ErrCorruptLog = errors.New("ledger: corrupt log entry")

// CheckEntry reports whether b is a log entry the ledger can fold: it
// decodes, its checksum matches and every delta names a cloud, a customer,
// a dimension and the start of an hour. The error wraps ErrCorruptLog and
// says what is wrong. A store calls it before putting a quarantined entry
// back.
func CheckEntry(b []byte) error {
	return walkEntry(b, func([]byte, rawKey, int64) {})
}

// EncodeDeltas appends the encoding of deltas to dst.
func EncodeDeltas(dst []byte, deltas []Delta) []byte {
	start := len(dst)
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(deltas)))
	for _, d := range deltas {
		dst = appendString(dst, string(d.Provider))
		dst = appendString(dst, d.Customer)
		dst = appendString(dst, d.Dimension)
		dst = binary.AppendVarint(dst, d.Hour.Unix())
		dst = binary.AppendUvarint(dst, uint64(d.Quantity))
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeDeltas decodes a log entry written by EncodeDeltas and appends its
// deltas to dst.
func DecodeDeltas(dst []Delta, b []byte) ([]Delta, error) {
	err := walkEntry(b, func(_ []byte, key rawKey, q int64) {
		dst = append(dst, Delta{BucketKey: key.decode(), Quantity: q})
	})
	return dst, err
}

// Aggregator sums the deltas of many log entries per bucket. Memory grows
// with distinct buckets, not with entries: a bucket already seen costs no
// allocation.
type Aggregator struct {
	idx    map[string]int // encoded key → index in out
	deltas []Delta
}

// AddEntry decodes one log entry and adds its deltas. On error (see
// CheckEntry) nothing of the entry is added, so a store can move the entry
// aside and go on folding the others.
func (a *Aggregator) AddEntry(b []byte) error {
	// The checksum once; the deltas twice: checked whole, then added.
	body, err := entryBody(b)
	if err != nil {
		return err
	}
	if err := walkBody(body, func([]byte, rawKey, int64) {}); err != nil {
		return err
	}
	if a.idx == nil {
		a.idx = make(map[string]int)
	}
	return walkBody(body, func(seg []byte, key rawKey, q int64) {
		if i, ok := a.idx[string(seg)]; ok {
			a.deltas[i].Quantity += q
			return
		}
		a.idx[string(seg)] = len(a.deltas)
		a.deltas = append(a.deltas, Delta{BucketKey: key.decode(), Quantity: q})
	})
}

// Deltas returns the sums, one per bucket.
func (a *Aggregator) Deltas() []Delta { return a.deltas }

// rawKey is a bucket key still in its encoded bytes.
type rawKey struct {
	provider, customer, dimension []byte
	hour                          int64
}

func (k rawKey) decode() BucketKey {
	return BucketKey{
		SeriesKey: SeriesKey{Provider: marketplace.CloudProvider(k.provider), Customer: string(k.customer), Dimension: string(k.dimension)},
		Hour:      time.Unix(k.hour, 0).UTC(),
	}
}

// walkEntry calls fn for each delta of an encoded entry with the bytes that
// encode its key, the key itself, and its quantity.
func walkEntry(b []byte, fn func(seg []byte, key rawKey, q int64)) error {
	body, err := entryBody(b)
	if err != nil {
		return err
	}
	return walkBody(body, fn)
}

// entryBody checks an entry's version and checksum and returns the version
// byte and the deltas, without the checksum.
func entryBody(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrCorruptLog)
	}
	switch b[0] {
	case codecV1:
	case codecVersion:
		if len(b) < 1+checksumLen {
			return nil, fmt.Errorf("%w: too short for its checksum", ErrCorruptLog)
		}
		body, sum := b[:len(b)-checksumLen], binary.LittleEndian.Uint32(b[len(b)-checksumLen:])
		if crc32.Checksum(body, crcTable) != sum {
			return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptLog)
		}
		b = body
	default:
		return nil, fmt.Errorf("%w: unknown version %d", ErrCorruptLog, b[0])
	}
	return b, nil
}

// walkBody walks the deltas of an entry's body (see entryBody).
func walkBody(b []byte, fn func(seg []byte, key rawKey, q int64)) error {
	r := reader{b: b[1:]}
	n := r.uvarint()
	// Every delta takes at least 5 bytes; a larger count is corrupt.
	if r.err == nil && n > uint64(len(r.b))/5 {
		return fmt.Errorf("%w: count %d exceeds entry size", ErrCorruptLog, n)
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		start := r.b
		p, c, d := r.bytes(), r.bytes(), r.bytes()
		hour := r.varint()
		seg := start[:len(start)-len(r.b)]
		q := r.uvarint()
		switch {
		case r.err != nil:
		case q > maxQuantity:
			r.fail("quantity out of range")
		case !marketplace.CloudProvider(p).Valid():
			r.fail(fmt.Sprintf("delta %d: unknown cloud %q", i, p))
		case len(c) == 0 || len(d) == 0:
			r.fail(fmt.Sprintf("delta %d: empty customer or dimension", i))
		case hour%3600 != 0:
			r.fail(fmt.Sprintf("delta %d: hour %d is not the start of an hour", i, hour))
		}
		if r.err != nil {
			break
		}
		fn(seg, rawKey{p, c, d, hour}, int64(q))
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return r.err
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

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("string longer than entry")
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}
