package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/saasmarket/marketplace"
)

// Catalogue maps the seller's own metric names, per cloud and product, to the
// cloud's dimension (AWS), meter (Azure) or metric (Google) and its billing
// unit. POST /v1/usage takes the seller's names; the ledger stores the cloud's.
type Catalogue struct {
	Products []Product `json:"products"`

	// byMetric indexes the products of each cloud by metric name.
	byMetric map[metricKey][]resolved
}

// Product is one listing on one cloud.
type Product struct {
	Provider marketplace.CloudProvider `json:"provider"`
	// Product is the cloud's product id (AWS product code, Azure offer,
	// Google service name).
	Product string            `json:"product"`
	Metrics map[string]Metric `json:"metrics"`
}

// Metric is what one of the seller's metric names becomes on one product.
type Metric struct {
	// Dimension is the cloud's name: the AWS dimension, the Azure meter id,
	// the Google metric (service/metric).
	Dimension string `json:"dimension"`
	// Unit is how many raw units (what the seller sends) make one billing
	// unit: 1,000,000 for a per-million-tokens dimension. Default 1.
	Unit int64 `json:"unit,omitempty"`
}

type metricKey struct {
	provider marketplace.CloudProvider
	metric   string
}

type resolved struct {
	product string
	Metric
}

// LoadCatalogue reads and validates a catalogue file (JSON).
func LoadCatalogue(path string) (*Catalogue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	return ParseCatalogue(b)
}

// ParseCatalogue decodes and validates a catalogue. Unknown fields are errors,
// so a misspelt setting is not silently ignored.
func ParseCatalogue(b []byte) (*Catalogue, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var c Catalogue
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ErrCatalogue is wrapped by every catalogue validation error.
var ErrCatalogue = errors.New("invalid catalogue")

func (c *Catalogue) validate() error {
	if len(c.Products) == 0 {
		return fmt.Errorf("%w: products: at least one product is required", ErrCatalogue)
	}
	c.byMetric = map[metricKey][]resolved{}
	seen := map[string]int{}
	// units per cloud dimension: the ledger bills a (cloud, dimension) in
	// one unit, so two products may share a dimension only with one unit.
	type unitAt struct {
		unit int64
		at   string
	}
	units := map[string]unitAt{}
	for i := range c.Products {
		p := &c.Products[i]
		at := fmt.Sprintf("products[%d]", i)
		if !p.Provider.Valid() {
			return fmt.Errorf("%w: %s.provider: %q is not one of aws, azure, gcp", ErrCatalogue, at, p.Provider)
		}
		if err := checkName(p.Product, 256); err != nil {
			return fmt.Errorf("%w: %s.product: %v", ErrCatalogue, at, err)
		}
		id := string(p.Provider) + "/" + p.Product
		if j, ok := seen[id]; ok {
			return fmt.Errorf("%w: %s: product %s is listed twice (also products[%d])", ErrCatalogue, at, id, j)
		}
		seen[id] = i
		if len(p.Metrics) == 0 {
			return fmt.Errorf("%w: %s.metrics: at least one metric is required", ErrCatalogue, at)
		}
		names := make([]string, 0, len(p.Metrics))
		for name := range p.Metrics {
			names = append(names, name)
		}
		slices.Sort(names) // errors name the same metric every run
		for _, name := range names {
			m := p.Metrics[name]
			mat := fmt.Sprintf("%s.metrics.%s", at, name)
			if err := checkName(name, 128); err != nil {
				return fmt.Errorf("%w: %s: metric name: %v", ErrCatalogue, mat, err)
			}
			if err := checkDimension(p.Provider, m.Dimension); err != nil {
				return fmt.Errorf("%w: %s.dimension: %v", ErrCatalogue, mat, err)
			}
			if m.Unit == 0 {
				m.Unit = 1
			}
			if m.Unit < 0 {
				return fmt.Errorf("%w: %s.unit: must be 1 or more, got %d", ErrCatalogue, mat, m.Unit)
			}
			p.Metrics[name] = m
			dk := string(p.Provider) + "/" + m.Dimension
			if prev, ok := units[dk]; ok && prev.unit != m.Unit {
				return fmt.Errorf("%w: %s.unit: %s dimension %q has unit %d here but %d in %s", ErrCatalogue, mat, p.Provider, m.Dimension, m.Unit, prev.unit, prev.at)
			}
			units[dk] = unitAt{m.Unit, mat}
			k := metricKey{p.Provider, name}
			c.byMetric[k] = append(c.byMetric[k], resolved{product: p.Product, Metric: m})
		}
	}
	return nil
}

// checkName accepts printable names without spaces.
func checkName(s string, max int) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > max:
		return fmt.Errorf("is longer than %d bytes", max)
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("%q has a space or an unprintable character", s)
	}
	return nil
}

// checkDimension applies each cloud's rules for a dimension name.
func checkDimension(p marketplace.CloudProvider, d string) error {
	if err := checkName(d, 255); err != nil {
		return err
	}
	switch p {
	case marketplace.AWS:
		// AWS dimension API names: letters, digits, '_', '-', '.'.
		if i := strings.IndexFunc(d, func(r rune) bool {
			return !(r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-' || r == '.'))
		}); i >= 0 {
			return fmt.Errorf("AWS dimension %q: only letters, digits, '_', '-' and '.' are allowed", d)
		}
	case marketplace.GCP:
		// Service Control metric names are "<service>/<metric>".
		if i := strings.LastIndexByte(d, '/'); i <= 0 || i == len(d)-1 {
			return fmt.Errorf("Google metric %q: want the full name, service/metric (e.g. example.endpoints.my-project.cloud.goog/tokens)", d)
		}
	}
	return nil
}

// Units returns the billing units for the ledger (ledger.Config.Units),
// keyed "provider/dimension".
func (c *Catalogue) Units() map[string]int64 {
	u := map[string]int64{}
	for _, p := range c.Products {
		for _, m := range p.Metrics {
			u[string(p.Provider)+"/"+m.Dimension] = m.Unit
		}
	}
	return u
}

// Providers returns the clouds the catalogue lists products for, in order.
func (c *Catalogue) Providers() []marketplace.CloudProvider {
	var ps []marketplace.CloudProvider
	for _, p := range c.Products {
		if !slices.Contains(ps, p.Provider) {
			ps = append(ps, p.Provider)
		}
	}
	slices.Sort(ps)
	return ps
}

// errResolve is a metric that does not resolve; field names the record field.
type errResolve struct {
	field string
	msg   string
}

func (e *errResolve) Error() string { return e.field + ": " + e.msg }

// Resolve returns the cloud dimension of a seller metric on a product. An
// empty product is allowed when every product of the cloud that has the
// metric maps it to the same dimension.
func (c *Catalogue) Resolve(p marketplace.CloudProvider, product, metric string) (string, error) {
	rs := c.byMetric[metricKey{p, metric}]
	if len(rs) == 0 {
		if !slices.Contains(c.Providers(), p) {
			return "", &errResolve{"provider", fmt.Sprintf("%q has no products in the catalogue", p)}
		}
		return "", &errResolve{"metric", fmt.Sprintf("%q is not in the catalogue for %s", metric, p)}
	}
	if product != "" {
		for _, r := range rs {
			if r.product == product {
				return r.Dimension, nil
			}
		}
		return "", &errResolve{"product", fmt.Sprintf("%s product %q has no metric %q in the catalogue", p, product, metric)}
	}
	for _, r := range rs[1:] {
		if r.Dimension != rs[0].Dimension {
			return "", &errResolve{"product", fmt.Sprintf("required: metric %q maps to different %s dimensions in products %q and %q", metric, p, rs[0].product, r.product)}
		}
	}
	return rs[0].Dimension, nil
}

// has reports whether the catalogue lists product of p.
func (c *Catalogue) has(p marketplace.CloudProvider, product string) bool {
	return slices.ContainsFunc(c.Products, func(x Product) bool { return x.Provider == p && x.Product == product })
}
