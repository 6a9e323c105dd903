// Package pages renders the HTML a buyer sees on a landing page, for every
// cloud: the confirmation once a sign-up went through, and an error page
// that says what went wrong and what to do.
//
// The templates are html/template files embedded in the binary (no outside
// CDN: styles are inline); New takes the seller's own files, any of which
// replaces the default of the same name, and parses and test-renders all
// of them at once, so that a broken template stops the daemon at start with
// the file's name instead of failing a buyer later. The cloud packages
// render through the *Pages that the lifecycle engine's Deps carry.
package pages

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/saasmarket/marketplace"
)

// The template files. Every page is LayoutFile together with its own file,
// which defines the blocks "title" and "content"; LayoutFile defines
// "layout", the whole document.
const (
	LayoutFile  = "layout.html"
	LandingFile = "landing.html" // executed with LandingData
	ErrorFile   = "error.html"   // executed with ErrorData
)

var files = []string{LayoutFile, LandingFile, ErrorFile}

//go:embed templates/*.html
var embedded embed.FS

// Pages renders the landing pages. It is safe for concurrent use.
type Pages struct {
	landing, errPage *template.Template
	log              *slog.Logger
}

// New parses the embedded templates, replacing each with the file of the
// same name in seller's top folder, if seller is not nil and has one. A
// seller's .html file with another name is an error (a misspelt name would
// otherwise be ignored in silence); other files are ignored. Every page is
// rendered once with sample data, so that a template that does not parse
// or does not execute (a misspelt field, a missing block) is an error here,
// naming the file. log receives the errors of later renders; nil is
// slog.Default().
func New(seller fs.FS, log *slog.Logger) (*Pages, error) {
	if log == nil {
		log = slog.Default()
	}
	src := map[string]string{}
	origin := map[string]string{}
	for _, name := range files {
		b, err := embedded.ReadFile("templates/" + name)
		if err != nil {
			return nil, fmt.Errorf("pages: embedded %s: %w", name, err)
		}
		src[name], origin[name] = string(b), "embedded "+name
	}
	if seller != nil {
		entries, err := fs.ReadDir(seller, ".")
		if err != nil {
			return nil, fmt.Errorf("pages: reading the seller's templates: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || path.Ext(name) != ".html" {
				continue
			}
			if !slices.Contains(files, name) {
				return nil, fmt.Errorf("pages: seller template %s: not a template this daemon renders (want one of %s)", name, strings.Join(files, ", "))
			}
			b, err := fs.ReadFile(seller, name)
			if err != nil {
				return nil, fmt.Errorf("pages: seller template %s: %w", name, err)
			}
			src[name], origin[name] = string(b), "seller template "+name
		}
	}
	p := &Pages{log: log}
	var err error
	if p.landing, err = parse(src, origin, LandingFile, sampleLanding); err != nil {
		return nil, err
	}
	if p.errPage, err = parse(src, origin, ErrorFile, sampleError); err != nil {
		return nil, err
	}
	return p, nil
}

// parse makes the template of one page and renders it with sample data.
func parse(src, origin map[string]string, page string, sample any) (*template.Template, error) {
	t, err := template.New(LayoutFile).Parse(src[LayoutFile])
	if err != nil {
		return nil, fmt.Errorf("pages: %s does not parse: %w", origin[LayoutFile], err)
	}
	if _, err := t.New(page).Parse(src[page]); err != nil {
		return nil, fmt.Errorf("pages: %s does not parse: %w", origin[page], err)
	}
	if err := t.ExecuteTemplate(io.Discard, "layout", sample); err != nil {
		return nil, fmt.Errorf("pages: %s (with %s) does not render: %w", origin[page], origin[LayoutFile], err)
	}
	return t, nil
}

// LandingData is what landing.html shows.
type LandingData struct {
	Provider       marketplace.CloudProvider
	Marketplace    string // "AWS Marketplace", "Azure Marketplace", "Google Cloud Marketplace"
	Product        string
	Plan           string // empty where the cloud has none
	Quantity       int64  // seats; zero where the plan has none
	Buyer          string // the cloud's customer id
	SubscriptionID string
	Account        string // the seller's account the subscription is linked to
	Status         string // marketplace.Status*
	StatusText     string // Status for a person
	Active         bool
	// Next, when set, is where the buyer goes on (the seller's product).
	Next      string
	RequestID string
}

// ErrorData is what error.html shows.
type ErrorData struct {
	Provider       marketplace.CloudProvider
	Marketplace    string
	MarketplaceURL string // where the buyer starts again
	Status         int
	Title          string
	Detail         string
	Action         string
	RequestID      string
}

// Problem is a failed sign-up as a landing handler reports it.
type Problem struct {
	Provider marketplace.CloudProvider
	// Status is the response's status code.
	Status int
	// Title is the page's heading; empty takes one that fits Status.
	Title string
	// Detail says what happened, in the buyer's words (never an internal
	// error: those go to the log).
	Detail string
	// Action says what to do now; empty takes one that fits Status.
	Action string
}

var sampleLanding = LandingData{Provider: marketplace.AWS, Marketplace: "AWS Marketplace", Product: "prod-sample",
	Plan: "pro", Quantity: 5, Buyer: "customer-1", SubscriptionID: "sub-1", Account: "acct-1",
	Status: marketplace.StatusActive, StatusText: "Active", Active: true, Next: "https://example.com/", RequestID: "req-1"}

var sampleError = ErrorData{Provider: marketplace.AWS, Marketplace: "AWS Marketplace", MarketplaceURL: "https://aws.amazon.com/marketplace",
	Status: http.StatusBadRequest, Title: "Sample", Detail: "Sample detail.", Action: "Sample action.", RequestID: "req-1"}

// Marketplace names a cloud's marketplace for a person.
func Marketplace(p marketplace.CloudProvider) string {
	switch p {
	case marketplace.AWS:
		return "AWS Marketplace"
	case marketplace.Azure:
		return "Azure Marketplace"
	case marketplace.GCP:
		return "Google Cloud Marketplace"
	}
	return "the marketplace"
}

// marketplaceURL is where a buyer of p starts a sign-up again.
func marketplaceURL(p marketplace.CloudProvider) string {
	switch p {
	case marketplace.AWS:
		return "https://aws.amazon.com/marketplace"
	case marketplace.Azure:
		return "https://azuremarketplace.microsoft.com"
	case marketplace.GCP:
		return "https://console.cloud.google.com/marketplace"
	}
	return ""
}

var statusText = map[string]string{
	marketplace.StatusPending:   "Waiting for the marketplace",
	marketplace.StatusActive:    "Active",
	marketplace.StatusSuspended: "Suspended",
	marketplace.StatusCancelled: "Cancelled",
	marketplace.StatusExpired:   "Expired",
}

// Landing answers 200 with the confirmation page for sub.
func (p *Pages) Landing(w http.ResponseWriter, r *http.Request, sub *marketplace.Subscription) {
	p.RenderLanding(w, r, LandingFor(sub))
}

// LandingFor is the page data of sub (nil: an empty subscription).
func LandingFor(sub *marketplace.Subscription) LandingData {
	if sub == nil {
		sub = &marketplace.Subscription{}
	}
	st := statusText[sub.Status]
	if st == "" {
		st = sub.Status
	}
	return LandingData{
		Provider: sub.Provider, Marketplace: Marketplace(sub.Provider),
		Product: sub.ProductCode, Plan: sub.Plan, Quantity: sub.Quantity,
		Buyer: sub.CustomerID, SubscriptionID: sub.ID, Account: sub.AccountID,
		Status: sub.Status, StatusText: st, Active: sub.Status == marketplace.StatusActive,
	}
}

// RenderLanding answers 200 with landing.html for d.
func (p *Pages) RenderLanding(w http.ResponseWriter, r *http.Request, d LandingData) {
	if d.RequestID == "" {
		d.RequestID = requestID(w)
	}
	p.render(w, r, p.landing, http.StatusOK, d, "Your "+d.Marketplace+" subscription is "+d.Status+".")
}

// Error answers pr.Status with error.html.
func (p *Pages) Error(w http.ResponseWriter, r *http.Request, pr Problem) {
	if pr.Status < 400 || pr.Status > 599 {
		pr.Status = http.StatusInternalServerError
	}
	mp := Marketplace(pr.Provider)
	title, action := defaults(pr.Status, mp)
	if pr.Title == "" {
		pr.Title = title
	}
	if pr.Action == "" {
		pr.Action = action
	}
	d := ErrorData{Provider: pr.Provider, Marketplace: mp, Status: pr.Status, Title: pr.Title,
		Detail: pr.Detail, Action: pr.Action, RequestID: requestID(w)}
	if pr.Status < 500 {
		d.MarketplaceURL = marketplaceURL(pr.Provider)
	}
	p.render(w, r, p.errPage, pr.Status, d, pr.Detail)
}

// defaults are the heading and advice for a status without its own.
func defaults(status int, mp string) (title, action string) {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "We could not confirm this sign-up", "Open the product on " + mp + " and start the sign-up from there again."
	case status == http.StatusMethodNotAllowed:
		return "Please start from " + mp, "This page opens when you set up your account from the product's page on " + mp + "; a bookmark of it does not work."
	case status < 500:
		return "We could not complete your sign-up", "Open the product on " + mp + " and start the sign-up from there again."
	case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return "The marketplace did not answer", "Nothing is lost. Please reload this page in a minute; if it keeps happening, contact us and quote the reference below."
	default:
		return "Something went wrong on our side", "Nothing is lost. Please reload this page in a minute; if it keeps happening, contact us and quote the reference below."
	}
}

// requestID is the id the daemon gave the request (X-Request-Id is set on
// the response before a handler runs), so that a buyer can quote it.
func requestID(w http.ResponseWriter) string { return w.Header().Get("X-Request-Id") }

// render writes t to a buffer first, so that a template failing half-way
// (a seller's, on data the sample lacked) ends in a plain-text answer with
// the same status and fallback text instead of half a page.
func (p *Pages) render(w http.ResponseWriter, r *http.Request, t *template.Template, status int, data any, fallback string) {
	var buf bytes.Buffer
	h := w.Header()
	// A landing URL carries the marketplace's token (Azure: in the query):
	// it must not leak to the next site or stay in a cache.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		p.log.ErrorContext(r.Context(), "pages: rendering failed", "template", t.Name(), "err", err)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, fallback+"\n")
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
