package aws

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Buyer is a customer of one product. Legacy products identify buyers by
// CustomerIdentifier (and ProductCode); current ones by
// CustomerAWSAccountId and LicenseArn.
type Buyer struct {
	CustomerIdentifier   string `json:"CustomerIdentifier,omitempty"`
	CustomerAWSAccountId string `json:"CustomerAWSAccountId"`
	LicenseArn           string `json:"LicenseArn,omitempty"`
	ProductCode          string `json:"ProductCode"`
	// Subscribed buyers can be metered; others get CustomerNotSubscribed,
	// except for an hour after EndedAt (the final usage AWS accepts after
	// unsubscribe-pending or License Deprovisioned).
	Subscribed   bool          `json:"Subscribed"`
	EndedAt      time.Time     `json:"EndedAt,omitzero"`
	Entitlements []Entitlement `json:"Entitlements,omitempty"`
}

// Key is the buyer's billing identity: the customer identifier, or the
// license ARN for license-based products.
func (b Buyer) Key() string { return cmp.Or(b.CustomerIdentifier, b.LicenseArn) }

// AddBuyer adds a subscribed buyer of b.ProductCode. Missing ids are made
// up: an account id always, and a CustomerIdentifier unless b has a
// LicenseArn (set LicenseArn to "new" for a made-up license).
func (e *Emulator) AddBuyer(b Buyer) Buyer {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	if b.CustomerAWSAccountId == "" {
		b.CustomerAWSAccountId = fmt.Sprintf("%012d", 100000000000+e.seq)
	}
	switch b.LicenseArn {
	case "":
		if b.CustomerIdentifier == "" {
			b.CustomerIdentifier = fmt.Sprintf("cust%08d", e.seq)
		}
	case "new":
		b.LicenseArn = fmt.Sprintf("arn:aws:license-manager::%s:license:l-%032x", b.CustomerAWSAccountId, e.seq)
	}
	b.Subscribed = true
	cp := b
	e.buyers[b.Key()] = &cp
	return b
}

// SetSubscribed subscribes or unsubscribes the buyer with key.
func (e *Emulator) SetSubscribed(key string, subscribed bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.buyers[key]
	if !ok {
		return fmt.Errorf("%w %q", errNoBuyer, key)
	}
	b.Subscribed, b.EndedAt = subscribed, time.Time{}
	return nil
}

// meterable reports whether b's usage is accepted at now.
func (b *Buyer) meterable(now time.Time) bool {
	return b.Subscribed || (!b.EndedAt.IsZero() && now.Before(b.EndedAt.Add(time.Hour)))
}

// MintToken returns a registration token for the buyer with key, as AWS
// posts it to the seller's landing page; it expires after ttl.
func (e *Emulator) MintToken(key string, ttl time.Duration) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.buyers[key]; !ok {
		return "", fmt.Errorf("%w %q", errNoBuyer, key)
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	t := base64.RawURLEncoding.EncodeToString(b[:])
	e.tokens[t] = token{buyer: key, expires: e.cfg.Clock().Add(ttl)}
	return t, nil
}

type lineKey struct {
	Scope     string // product code, or license ARN
	Customer  string // customer identifier, or account id
	Dimension string
	Hour      time.Time
}

type line struct {
	Quantity int64
	RecordID string
}

// Line is one accepted (customer, dimension, hour) of the bill.
type Line struct {
	Scope            string    `json:"Scope"` // product code or license ARN
	Customer         string    `json:"Customer"`
	Dimension        string    `json:"Dimension"`
	Hour             time.Time `json:"Hour"`
	Quantity         int64     `json:"Quantity"`
	MeteringRecordId string    `json:"MeteringRecordId"`
}

// Bill is what the emulator accepted.
type Bill struct {
	Lines []Line `json:"Lines"`
	// Totals per customer and dimension.
	Totals map[string]map[string]int64 `json:"Totals"`
}

// Sum is the accepted total of a customer and dimension.
func (b Bill) Sum(customer, dimension string) int64 { return b.Totals[customer][dimension] }

// Bill returns the accepted usage, ordered by key.
func (e *Emulator) Bill() Bill {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := Bill{Totals: map[string]map[string]int64{}}
	for k, l := range e.lines {
		b.Lines = append(b.Lines, Line{Scope: k.Scope, Customer: k.Customer, Dimension: k.Dimension, Hour: k.Hour, Quantity: l.Quantity, MeteringRecordId: l.RecordID})
		if b.Totals[k.Customer] == nil {
			b.Totals[k.Customer] = map[string]int64{}
		}
		b.Totals[k.Customer][k.Dimension] += l.Quantity
	}
	slices.SortFunc(b.Lines, func(x, y Line) int {
		return cmp.Or(cmp.Compare(x.Scope, y.Scope), cmp.Compare(x.Customer, y.Customer),
			cmp.Compare(x.Dimension, y.Dimension), x.Hour.Compare(y.Hour))
	})
	return b
}

type usageAllocation struct {
	AllocatedUsageQuantity *int64            `json:"AllocatedUsageQuantity,omitempty"`
	Tags                   []json.RawMessage `json:"Tags,omitempty"`
}

type usageRecord struct {
	Timestamp            *epoch            `json:"Timestamp,omitempty"`
	CustomerIdentifier   *string           `json:"CustomerIdentifier,omitempty"`
	CustomerAWSAccountId *string           `json:"CustomerAWSAccountId,omitempty"`
	LicenseArn           *string           `json:"LicenseArn,omitempty"`
	Dimension            *string           `json:"Dimension,omitempty"`
	Quantity             *int64            `json:"Quantity,omitempty"`
	UsageAllocations     []usageAllocation `json:"UsageAllocations,omitempty"`
}

type usageRecordResult struct {
	UsageRecord      usageRecord `json:"UsageRecord"`
	MeteringRecordId string      `json:"MeteringRecordId,omitempty"`
	Status           string      `json:"Status"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// inWindow applies AWS's window: usage is refused age or more after it
// happened (24 hours for BatchMeterUsage, 6 for MeterUsage), except that,
// with monthGrace (BatchMeterUsage only), the previous month's usage is
// accepted until 06:00 UTC on the 1st; and usage more than an hour ahead
// is refused.
func inWindow(ts, now time.Time, age time.Duration, monthGrace bool) bool {
	if ts.After(now.Add(time.Hour)) {
		return false
	}
	if now.Sub(ts) < age {
		return true
	}
	if !monthGrace {
		return false
	}
	y, m, _ := now.Date()
	monthStart := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	return now.Before(monthStart.Add(6*time.Hour)) && !ts.Before(monthStart.AddDate(0, -1, 0))
}

func checkQuantity(field string, q *int64) error {
	if q != nil && (*q < 0 || *q > 1<<31-1) {
		return errorf("ValidationException", "%s must be 0..2147483647", field)
	}
	return nil
}

// tagPattern is the pattern of TagKey and TagValue in
// meteringmarketplace.service-2.json (" -=" is the range space to '=').
var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9+ -=._:\/@]+$`)

// Shapes of meteringmarketplace.service-2.json that a request must fit.
var (
	productCodePattern = regexp.MustCompile(`^[-a-zA-Z0-9/=:_.@]*$`)
	accountIDPattern   = regexp.MustCompile(`^[0-9]+$`)
	licenseArnPattern  = regexp.MustCompile(`^arn:aws[a-zA-Z-]*:[A-Za-z0-9][A-Za-z0-9_/.-]{0,62}:[A-Za-z0-9_/.-]{0,63}:[A-Za-z0-9_/.-]{0,63}:([A-Za-z0-9][A-Za-z0-9:_/+=,@.-]*)$`)
)

// validLicenseArn matches the LicenseArn pattern, whose last part is
// {0,1023} characters after the first (beyond RE2's repeat limit).
func validLicenseArn(arn string) bool {
	m := licenseArnPattern.FindStringSubmatch(arn)
	return m != nil && len(m[1]) <= 1024
}

// checkProductCode checks the ProductCode shape: at most 255 characters
// of ^[-a-zA-Z0-9/=:_.@]*$.
func checkProductCode(code string) error {
	if len(code) > 255 || !productCodePattern.MatchString(code) {
		return errorf("ValidationException", "ProductCode %q must be at most 255 characters matching %s", code, productCodePattern)
	}
	return nil
}

// checkRecordShapes checks a UsageRecord's identifiers against their
// shapes: CustomerIdentifier at most 255 characters, CustomerAWSAccountId
// 1..255 digits, LicenseArn the ARN pattern.
func checkRecordShapes(r usageRecord) error {
	if r.CustomerIdentifier != nil && len(*r.CustomerIdentifier) > 255 {
		return errorf("ValidationException", "CustomerIdentifier must be at most 255 characters")
	}
	if r.CustomerAWSAccountId != nil && (len(*r.CustomerAWSAccountId) > 255 || !accountIDPattern.MatchString(*r.CustomerAWSAccountId)) {
		return errorf("ValidationException", "CustomerAWSAccountId %q must be 1..255 digits", *r.CustomerAWSAccountId)
	}
	if r.LicenseArn != nil && !validLicenseArn(*r.LicenseArn) {
		return errorf("ValidationException", "LicenseArn %q does not match %s", *r.LicenseArn, licenseArnPattern)
	}
	return nil
}

// checkAllocations checks UsageAllocations against qty. uniqueSets
// applies MeterUsage's rule that "each UsageAllocation must have a unique
// set of tags".
func checkAllocations(allocs []usageAllocation, qty int64, uniqueSets bool) error {
	if allocs == nil {
		return nil
	}
	sets := map[string]bool{}
	if len(allocs) < 1 || len(allocs) > 2500 {
		return errorf("InvalidUsageAllocationsException", "UsageAllocations must hold 1..2500 allocations")
	}
	var sum int64
	for _, a := range allocs {
		if a.AllocatedUsageQuantity == nil {
			return errorf("InvalidUsageAllocationsException", "AllocatedUsageQuantity is required")
		}
		if err := checkQuantity("AllocatedUsageQuantity", a.AllocatedUsageQuantity); err != nil {
			return err
		}
		if a.Tags != nil && (len(a.Tags) < 1 || len(a.Tags) > 5) {
			// TagList: min 1, max 5 (omit Tags for the untagged bucket).
			return errorf("InvalidTagException", "an allocation's Tags hold 1..5 tags, got %d", len(a.Tags))
		}
		var set []string
		for _, raw := range a.Tags {
			var tag struct{ Key, Value *string }
			if err := json.Unmarshal(raw, &tag); err != nil {
				return errorf("InvalidTagException", "a tag is {\"Key\", \"Value\"}: %v", err)
			}
			// AWS's Tag: Key 1..100 characters, Value 1..256.
			if n := len(str(tag.Key)); n < 1 || n > 100 {
				return errorf("InvalidTagException", "a tag Key must be 1..100 characters, got %d", n)
			}
			if n := len(str(tag.Value)); n < 1 || n > 256 {
				return errorf("InvalidTagException", "a tag Value must be 1..256 characters, got %d", n)
			}
			if !tagPattern.MatchString(*tag.Key) || !tagPattern.MatchString(*tag.Value) {
				return errorf("InvalidTagException", "tag %q=%q: keys and values must match %s", *tag.Key, *tag.Value, tagPattern)
			}
			set = append(set, strconv.Quote(*tag.Key)+"="+strconv.Quote(*tag.Value))
		}
		slices.Sort(set)
		k := strings.Join(set, ",")
		if uniqueSets && sets[k] {
			return errorf("InvalidUsageAllocationsException", "two allocations have the same set of tags {%s}", k)
		}
		sets[k] = true
		sum += *a.AllocatedUsageQuantity
	}
	if sum != qty {
		return errorf("InvalidUsageAllocationsException", "allocations sum to %d, not the quantity %d", sum, qty)
	}
	return nil
}

// resolveRecord checks one record against the whole-batch rules and
// returns its line key. e.mu is held.
func (e *Emulator) resolveRecord(productCode string, r usageRecord, now time.Time) (lineKey, *Buyer, error) {
	cust, acct, lic := str(r.CustomerIdentifier), str(r.CustomerAWSAccountId), str(r.LicenseArn)
	var k lineKey
	if r.Timestamp == nil {
		return k, nil, errorf("ValidationException", "Timestamp is required")
	}
	if err := checkRecordShapes(r); err != nil {
		return k, nil, err
	}
	if str(r.Dimension) == "" || len(str(r.Dimension)) > 255 {
		return k, nil, errorf("InvalidUsageDimensionException", "Dimension must be 1..255 characters")
	}
	if err := checkQuantity("Quantity", r.Quantity); err != nil {
		return k, nil, err
	}
	qty := int64(0)
	if r.Quantity != nil {
		qty = *r.Quantity
	}
	if err := checkAllocations(r.UsageAllocations, qty, false); err != nil {
		return k, nil, err
	}
	var b *Buyer
	switch {
	case (cust == "") == (acct == ""):
		return k, nil, errorf("InvalidCustomerIdentifierException", "a record needs exactly one of CustomerIdentifier and CustomerAWSAccountId")
	case cust != "":
		if lic != "" {
			return k, nil, errorf("InvalidLicenseException", "LicenseArn goes with CustomerAWSAccountId, not CustomerIdentifier")
		}
		if productCode == "" {
			return k, nil, errorf("InvalidProductCodeException", "ProductCode is required with CustomerIdentifier")
		}
		b = e.buyers[cust]
		if b == nil || b.CustomerIdentifier != cust {
			return k, nil, errorf("InvalidCustomerIdentifierException", "unknown CustomerIdentifier %q", cust)
		}
		if b.ProductCode != productCode {
			return k, nil, errorf("InvalidProductCodeException", "customer %q has no subscription to product %q", cust, productCode)
		}
		k = lineKey{Scope: productCode, Customer: cust}
	default:
		if productCode != "" {
			return k, nil, errorf("ValidationException", "ProductCode must be omitted with LicenseArn")
		}
		if lic == "" {
			return k, nil, errorf("InvalidLicenseException", "LicenseArn is required with CustomerAWSAccountId")
		}
		b = e.buyers[lic]
		if b == nil {
			return k, nil, errorf("InvalidLicenseException", "unknown LicenseArn %q", lic)
		}
		if b.CustomerAWSAccountId != acct {
			return k, nil, errorf("InvalidCustomerIdentifierException", "license %q does not belong to account %q", lic, acct)
		}
		k = lineKey{Scope: lic, Customer: acct}
	}
	if err := e.knownDimension(b.ProductCode, str(r.Dimension)); err != nil {
		return k, nil, err
	}
	if !inWindow(r.Timestamp.Time, now, 24*time.Hour, true) {
		return k, nil, errorf("TimestampOutOfBoundsException", "Timestamp %s is outside the accepted window", r.Timestamp.Format(time.RFC3339))
	}
	k.Dimension = str(r.Dimension)
	k.Hour = r.Timestamp.Truncate(time.Hour) // seconds and minutes are ignored
	return k, b, nil
}

func (e *Emulator) batchMeterUsage(body []byte) (any, error) {
	var in struct {
		ProductCode  *string
		UsageRecords []usageRecord
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.UsageRecords == nil {
		return nil, errorf("ValidationException", "UsageRecords is required")
	}
	if len(in.UsageRecords) > 25 {
		return nil, errorf("ValidationException", "at most 25 UsageRecords per call, got %d", len(in.UsageRecords))
	}
	if in.ProductCode != nil {
		if err := checkProductCode(*in.ProductCode); err != nil {
			return nil, err
		}
		if err := e.knownProduct(*in.ProductCode); err != nil {
			return nil, errorf("InvalidProductCodeException", "%v", err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Clock()
	keys := make([]lineKey, len(in.UsageRecords))
	buyers := make([]*Buyer, len(in.UsageRecords))
	for i, r := range in.UsageRecords {
		k, b, err := e.resolveRecord(str(in.ProductCode), r, now)
		if err != nil {
			if ae, ok := err.(*apiError); ok && ae.code == "TimestampOutOfBoundsException" {
				e.stats.OutOfBounds++
			}
			return nil, err
		}
		// "Each BatchMeterUsage request is for only one product": license
		// records name no ProductCode, but their licenses must agree.
		if i > 0 && b.ProductCode != buyers[0].ProductCode {
			return nil, errorf("ValidationException", "a BatchMeterUsage call is for one product: record %d is of product %q, record 0 of %q", i, b.ProductCode, buyers[0].ProductCode)
		}
		keys[i], buyers[i] = k, b
	}
	out := struct {
		Results            []usageRecordResult `json:"Results"`
		UnprocessedRecords []usageRecord       `json:"UnprocessedRecords"`
	}{Results: []usageRecordResult{}, UnprocessedRecords: []usageRecord{}}
	for i, r := range in.UsageRecords {
		if e.chance(e.faults.UnprocessedRate) {
			e.stats.Unprocessed++
			out.UnprocessedRecords = append(out.UnprocessedRecords, r)
			continue
		}
		res := usageRecordResult{UsageRecord: r}
		qty := int64(0)
		if r.Quantity != nil {
			qty = *r.Quantity
		}
		l := e.lines[keys[i]]
		switch {
		case !buyers[i].meterable(now):
			e.stats.NotSubscribed++
			res.Status = "CustomerNotSubscribed"
		case l == nil:
			e.stats.Accepted++
			l = &line{Quantity: qty, RecordID: e.recordID()}
			e.lines[keys[i]] = l
			res.Status, res.MeteringRecordId = "Success", l.RecordID
		case l.Quantity == qty:
			e.stats.Idempotent++
			res.Status, res.MeteringRecordId = "Success", l.RecordID
		default:
			e.stats.Duplicate++
			res.Status = "DuplicateRecord"
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

func (e *Emulator) recordID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (e *Emulator) meterUsage(body []byte) (any, error) {
	var in struct {
		ProductCode      *string
		Timestamp        *epoch
		UsageDimension   *string
		UsageQuantity    *int64
		DryRun           *bool
		UsageAllocations []usageAllocation
		ClientToken      *string
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	switch {
	case str(in.ProductCode) == "":
		return nil, errorf("ValidationException", "ProductCode is required")
	case in.Timestamp == nil:
		return nil, errorf("ValidationException", "Timestamp is required")
	case str(in.UsageDimension) == "" || len(*in.UsageDimension) > 255:
		// UsageDimension: min 1, max 255.
		return nil, errorf("InvalidUsageDimensionException", "UsageDimension must be 1..255 characters")
	case in.ClientToken != nil && (len(*in.ClientToken) < 1 || len(*in.ClientToken) > 64):
		// ClientToken: min 1, max 64.
		return nil, errorf("ValidationException", "ClientToken must be 1..64 characters")
	}
	if err := checkProductCode(*in.ProductCode); err != nil {
		return nil, err
	}
	if err := checkQuantity("UsageQuantity", in.UsageQuantity); err != nil {
		return nil, err
	}
	qty := int64(0)
	if in.UsageQuantity != nil {
		qty = *in.UsageQuantity
	}
	if err := checkAllocations(in.UsageAllocations, qty, true); err != nil {
		return nil, err
	}
	if err := e.knownProduct(*in.ProductCode); err != nil {
		return nil, errorf("InvalidProductCodeException", "%v", err)
	}
	if err := e.knownDimension(*in.ProductCode, *in.UsageDimension); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// AWS documents 6 hours for MeterUsage (24 for BatchMeterUsage), and
	// the month-end grace for BatchMeterUsage only.
	if !inWindow(in.Timestamp.Time, e.cfg.Clock(), 6*time.Hour, false) {
		e.stats.OutOfBounds++
		return nil, errorf("TimestampOutOfBoundsException", "Timestamp is outside the accepted window")
	}
	if in.DryRun != nil && *in.DryRun {
		// AWS answers a dry run that would succeed with this error.
		return nil, errorf("DryRunOperation", "request would have succeeded, but the DryRun flag is set")
	}
	k := lineKey{Scope: *in.ProductCode, Customer: "(caller)", Dimension: *in.UsageDimension, Hour: in.Timestamp.Truncate(time.Hour)}
	ct := str(in.ClientToken)
	// "If you retry the operation with the same ClientToken, but with
	// different parameters, the retry fails with an
	// IdempotencyConflictException": refused before anything is recorded,
	// before the hour's DuplicateRequestException too.
	allocs, _ := json.Marshal(in.UsageAllocations)
	params := fmt.Sprintf("%s|%d|%s|%d|%v|%s", *in.ProductCode, in.Timestamp.Unix(), *in.UsageDimension, qty, in.DryRun != nil && *in.DryRun, allocs)
	if prev, ok := e.meterTokens[ct]; ct != "" && ok && prev != params {
		return nil, errorf("IdempotencyConflictException", "ClientToken %q was used for a request with other parameters", ct)
	}
	l := e.lines[k]
	switch {
	case l == nil:
		l = &line{Quantity: qty, RecordID: e.recordID()}
		e.lines[k] = l
		e.stats.Accepted++
	case l.Quantity != qty:
		e.stats.Duplicate++
		return nil, errorf("DuplicateRequestException", "a record for this dimension and hour exists with another quantity")
	default:
		e.stats.Idempotent++
	}
	if ct != "" {
		e.meterTokens[ct] = params
	}
	return map[string]string{"MeteringRecordId": l.RecordID}, nil
}

func (e *Emulator) resolveCustomer(body []byte) (any, error) {
	var in struct{ RegistrationToken *string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if str(in.RegistrationToken) == "" {
		return nil, errorf("ValidationException", "RegistrationToken is required")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tokens[*in.RegistrationToken]
	if !ok {
		return nil, errorf("InvalidTokenException", "registration token is invalid")
	}
	if !e.cfg.Clock().Before(t.expires) {
		return nil, errorf("ExpiredTokenException", "registration token has expired")
	}
	b := e.buyers[t.buyer]
	out := map[string]string{"CustomerAWSAccountId": b.CustomerAWSAccountId, "ProductCode": b.ProductCode}
	if b.CustomerIdentifier != "" {
		out["CustomerIdentifier"] = b.CustomerIdentifier
	}
	if b.LicenseArn != "" {
		out["LicenseArn"] = b.LicenseArn
	}
	return out, nil
}

// KeyID names the key that signs RegisterUsage responses.
const KeyID = "emulator-register-usage-1"

func (e *Emulator) registerUsage(body []byte) (any, error) {
	var in struct {
		ProductCode      *string
		PublicKeyVersion *int64
		Nonce            *string
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if str(in.ProductCode) == "" {
		return nil, errorf("InvalidProductCodeException", "ProductCode is required")
	}
	if err := checkProductCode(*in.ProductCode); err != nil {
		return nil, err
	}
	if len(str(in.Nonce)) > 255 {
		return nil, errorf("ValidationException", "Nonce must be at most 255 characters")
	}
	if in.PublicKeyVersion == nil || *in.PublicKeyVersion != 1 {
		return nil, errorf("InvalidPublicKeyVersionException", "PublicKeyVersion must be 1")
	}
	now := e.cfg.Clock()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"productCode": *in.ProductCode, "publicKeyVersion": *in.PublicKeyVersion,
		"nonce": str(in.Nonce), "iat": now.Unix(),
	})
	tok.Header["kid"] = KeyID
	sig, err := tok.SignedString(e.key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return struct {
		Signature                  string
		PublicKeyRotationTimestamp epoch
	}{sig, epoch{now.Truncate(24 * time.Hour)}}, nil
}

func (e *Emulator) serveKeys(w http.ResponseWriter, _ *http.Request) {
	pt, err := e.key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KeyID,
		"x": base64.RawURLEncoding.EncodeToString(pt[1:33]),
		"y": base64.RawURLEncoding.EncodeToString(pt[33:]),
	}}})
}
