package aws

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Entitlement is one dimension a buyer holds under a contract, with one
// of the four value kinds set.
type Entitlement struct {
	Dimension      string     `json:"Dimension"`
	IntegerValue   *int64     `json:"IntegerValue,omitempty"`
	DoubleValue    *float64   `json:"DoubleValue,omitempty"`
	BooleanValue   *bool      `json:"BooleanValue,omitempty"`
	StringValue    *string    `json:"StringValue,omitempty"`
	ExpirationDate *time.Time `json:"ExpirationDate,omitempty"`
}

// SetEntitlements replaces the entitlements of the buyer with key.
func (e *Emulator) SetEntitlements(key string, ents []Entitlement) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.buyers[key]
	if !ok {
		return fmt.Errorf("%w %q", errNoBuyer, key)
	}
	b.Entitlements = slices.Clone(ents)
	return nil
}

type entitlementValue struct {
	IntegerValue *int64   `json:"IntegerValue,omitempty"`
	DoubleValue  *float64 `json:"DoubleValue,omitempty"`
	BooleanValue *bool    `json:"BooleanValue,omitempty"`
	StringValue  *string  `json:"StringValue,omitempty"`
}

type wireEntitlement struct {
	ProductCode          string           `json:"ProductCode"`
	Dimension            string           `json:"Dimension"`
	CustomerIdentifier   string           `json:"CustomerIdentifier,omitempty"`
	CustomerAWSAccountId string           `json:"CustomerAWSAccountId,omitempty"`
	LicenseArn           string           `json:"LicenseArn,omitempty"`
	Value                entitlementValue `json:"Value"`
	ExpirationDate       *epoch           `json:"ExpirationDate,omitempty"`
}

var filterNames = []string{"CUSTOMER_IDENTIFIER", "DIMENSION", "CUSTOMER_AWS_ACCOUNT_ID", "LICENSE_ARN"}

func (e *Emulator) getEntitlements(body []byte) (any, error) {
	var in struct {
		ProductCode *string
		Filter      map[string][]string
		NextToken   *string
		MaxResults  *int
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if str(in.ProductCode) == "" || len(*in.ProductCode) > 255 {
		// ProductCode: min 1, max 255.
		return nil, errorf("InvalidParameterException", "ProductCode must be 1..255 characters")
	}
	size := 25
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 25 {
			return nil, errorf("InvalidParameterException", "MaxResults must be 1..25")
		}
		size = *in.MaxResults
	}
	for name, vals := range in.Filter {
		if !slices.Contains(filterNames, name) {
			return nil, errorf("InvalidParameterException", "unknown filter %q", name)
		}
		if len(vals) == 0 {
			return nil, errorf("InvalidParameterException", "filter %q needs a value", name)
		}
	}
	// GetEntitlementsRequest.Filter: "CustomerIdentifier and
	// CustomerAWSAccountId are mutually exclusive parameters."
	_, byCustomer := in.Filter["CUSTOMER_IDENTIFIER"]
	if _, byAccount := in.Filter["CUSTOMER_AWS_ACCOUNT_ID"]; byCustomer && byAccount {
		return nil, errorf("InvalidParameterException", "CUSTOMER_IDENTIFIER and CUSTOMER_AWS_ACCOUNT_ID are mutually exclusive filters")
	}
	// NextToken is a NonEmptyString (pattern \S+): an empty or blank
	// token is refused, not read as "from the start".
	if in.NextToken != nil && strings.TrimSpace(*in.NextToken) == "" {
		return nil, errorf("InvalidParameterException", "NextToken must not be empty")
	}
	// A token is "<offset>" or "e<offset>" (an empty page comes first).
	start, empty := 0, false
	if t := str(in.NextToken); t != "" {
		if t[0] == 'e' {
			empty, t = true, t[1:]
		}
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return nil, errorf("InvalidParameterException", "invalid NextToken")
		}
		start = n
	}
	match := func(name, v string) bool {
		f, ok := in.Filter[name]
		return !ok || slices.Contains(f, v)
	}
	e.mu.Lock()
	var all []wireEntitlement
	for _, b := range e.buyers {
		if b.ProductCode != *in.ProductCode || !match("CUSTOMER_IDENTIFIER", b.CustomerIdentifier) ||
			!match("CUSTOMER_AWS_ACCOUNT_ID", b.CustomerAWSAccountId) || !match("LICENSE_ARN", b.LicenseArn) {
			continue
		}
		for _, en := range b.Entitlements {
			if !match("DIMENSION", en.Dimension) {
				continue
			}
			w := wireEntitlement{ProductCode: b.ProductCode, Dimension: en.Dimension,
				CustomerIdentifier: b.CustomerIdentifier, CustomerAWSAccountId: b.CustomerAWSAccountId, LicenseArn: b.LicenseArn,
				Value: entitlementValue{en.IntegerValue, en.DoubleValue, en.BooleanValue, en.StringValue}}
			if en.ExpirationDate != nil {
				w.ExpirationDate = &epoch{*en.ExpirationDate}
			}
			all = append(all, w)
		}
	}
	emptyPages := e.cfg.EmptyPages
	e.mu.Unlock()
	slices.SortFunc(all, func(x, y wireEntitlement) int {
		if c := strings.Compare(x.LicenseArn+x.CustomerIdentifier, y.LicenseArn+y.CustomerIdentifier); c != 0 {
			return c
		}
		return strings.Compare(x.Dimension, y.Dimension)
	})
	out := struct {
		Entitlements []wireEntitlement `json:"Entitlements"`
		NextToken    string            `json:"NextToken,omitempty"`
	}{Entitlements: []wireEntitlement{}}
	if start > len(all) {
		return nil, errorf("InvalidParameterException", "invalid NextToken")
	}
	if emptyPages && start > 0 && !empty {
		out.NextToken = "e" + strconv.Itoa(start)
		return out, nil
	}
	end := min(start+size, len(all))
	out.Entitlements = append(out.Entitlements, all[start:end]...)
	if end < len(all) {
		out.NextToken = strconv.Itoa(end)
	}
	return out, nil
}
