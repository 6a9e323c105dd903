package ledger

import (
	"cmp"
	"slices"
	"time"

	"github.com/saasmarket/marketplace"
)

// The functions in this file are the ledger's rules, written once and used
// by every store inside its own transactions: a store reads the rows, asks
// the plan, and writes what the plan says. They do no I/O.

// Delta is usage to add to one bucket.
type Delta struct {
	BucketKey
	Quantity int64
}

// BucketDelta is what folding adds to one bucket: Quantity in all, of which
// Late arrived after its own hour was sealed.
type BucketDelta struct {
	BucketKey
	Quantity int64
	Late     int64
}

// PlanFold applies the late-usage rule to deltas read from the append log:
// usage whose hour is already sealed for its series goes to the series'
// earliest open hour (its SealedUntil), counted as late. Nothing is dropped.
// series must hold every series the deltas name that has one stored; a
// missing series has nothing sealed. The result has one entry per bucket, in
// a stable order.
func PlanFold(deltas []Delta, series map[SeriesKey]Series) []BucketDelta {
	idx := make(map[BucketKey]int, len(deltas))
	var out []BucketDelta
	for _, d := range deltas {
		k := d.BucketKey
		k.Hour = k.Hour.UTC()
		late := int64(0)
		if s, ok := series[k.SeriesKey]; ok && k.Hour.Before(s.SealedUntil) {
			k.Hour = s.SealedUntil.UTC()
			late = d.Quantity
		}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, BucketDelta{BucketKey: k})
		}
		out[i].Quantity += d.Quantity
		out[i].Late += late
	}
	slices.SortFunc(out, func(a, b BucketDelta) int { return compareKeys(a.BucketKey, b.BucketKey) })
	return out
}

// SealRequest says which open buckets to seal, and the rules to seal them by.
type SealRequest struct {
	// Before: every open bucket whose hour starts before it is sealed.
	Before time.Time
	// Provider and Customer, when set, limit sealing to that buyer (the
	// final flush when a subscription ends).
	Provider marketplace.CloudProvider
	Customer string
	// Final settles each matching series' remainder by Settle.
	Final  bool
	Settle SettlePolicy
	Now    time.Time
	// Unit returns a series' billing unit in raw units (1 when unset).
	Unit func(SeriesKey) int64
	// MaxUnits returns a cloud's largest quantity per report (0: no limit).
	MaxUnits func(marketplace.CloudProvider) int64
}

// SealPlan is what a store writes, in one transaction, to seal.
type SealPlan struct {
	// Buckets to store: existing ones (ID != 0) now sealed or skipped, and
	// new ones (ID == 0) that a final settlement created.
	Buckets []Bucket
	// Series holds the new sealing state of every series it names.
	Series map[SeriesKey]Series
}

// PlanSeal seals open buckets in hour order per series: each bucket's total
// (its quantity plus the carry of the series) is split into whole units to
// report and a remainder that carries on. Nothing is ever rounded up, except
// by a final settlement under SettleRoundUp. open holds the open buckets to
// seal (any order); series must hold every series they name that has one
// stored, and, for a final seal, every series of the buyer.
func PlanSeal(open []Bucket, series map[SeriesKey]Series, req SealRequest) SealPlan {
	unit := func(k SeriesKey) int64 {
		if req.Unit == nil {
			return 1
		}
		if u := req.Unit(k); u > 0 {
			return u
		}
		return 1
	}
	maxUnits := func(p marketplace.CloudProvider) int64 {
		if req.MaxUnits == nil {
			return 0
		}
		return req.MaxUnits(p)
	}
	sorted := slices.Clone(open)
	slices.SortFunc(sorted, func(a, b Bucket) int { return compareKeys(a.BucketKey, b.BucketKey) })

	plan := SealPlan{Series: make(map[SeriesKey]Series)}
	lastIdx := make(map[SeriesKey]int) // index in plan.Buckets of a series' last sealed bucket
	for _, b := range sorted {
		if b.State != StateOpen || !b.Hour.Before(req.Before) {
			continue
		}
		s, ok := plan.Series[b.SeriesKey]
		if !ok {
			s = series[b.SeriesKey]
		}
		units, rem := Divide(b.Quantity+s.Carry, unit(b.SeriesKey), maxUnits(b.Provider))
		s.Carry = rem
		if end := b.Hour.Add(time.Hour); end.After(s.SealedUntil) {
			s.SealedUntil = end
		}
		plan.Series[b.SeriesKey] = s
		b.Units = units
		b.ReportID = ReportID(b.BucketKey)
		b.SealedAt = req.Now
		b.State = StateSealed
		if units == 0 {
			b.State = StateSkipped
			b.DoneAt = req.Now
		}
		lastIdx[b.SeriesKey] = len(plan.Buckets)
		plan.Buckets = append(plan.Buckets, b)
	}
	if !req.Final {
		return plan
	}
	// Settle every series of the buyer, including those with nothing open.
	for k, s := range series {
		if _, ok := plan.Series[k]; !ok && matches(k, req) {
			plan.Series[k] = s
		}
	}
	for _, k := range sortedKeys(plan.Series) {
		s := plan.Series[k]
		if s.Carry > 0 && req.Settle == SettleRoundUp {
			if i, ok := lastIdx[k]; ok {
				plan.Buckets[i].Units++
				plan.Buckets[i].State = StateSealed
				plan.Buckets[i].DoneAt = time.Time{}
			} else {
				hour := later(HourOf(req.Now), s.SealedUntil.UTC())
				bk := BucketKey{SeriesKey: k, Hour: hour}
				plan.Buckets = append(plan.Buckets, Bucket{
					BucketKey: bk, State: StateSealed, Units: 1,
					ReportID: ReportID(bk), SealedAt: req.Now,
				})
				s.SealedUntil = hour.Add(time.Hour)
			}
		}
		s.Carry = 0
		plan.Series[k] = s
	}
	return plan
}

func matches(k SeriesKey, req SealRequest) bool {
	return (req.Provider == "" || k.Provider == req.Provider) && (req.Customer == "" || k.Customer == req.Customer)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func sortedKeys(m map[SeriesKey]Series) []SeriesKey {
	keys := make([]SeriesKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareSeries)
	return keys
}

func compareSeries(a, b SeriesKey) int {
	return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Customer, b.Customer), cmp.Compare(a.Dimension, b.Dimension))
}

func compareKeys(a, b BucketKey) int {
	return cmp.Or(compareSeries(a.SeriesKey, b.SeriesKey), a.Hour.Compare(b.Hour))
}
