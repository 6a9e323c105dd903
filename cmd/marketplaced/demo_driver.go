package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// demoDriver plays the buyers and the seller's service: one buyer per cloud
// subscribes through the cloud's landing path, the service sends usage
// through POST /v1/usage, and what each emulator bills is printed.
type demoDriver struct {
	url, key string
	clouds   demoClouds
	out      *lineWriter
	clock    func() time.Time // the ledger's
	logger   *slog.Logger
	client   *http.Client

	customers map[string]string // provider → customer, once subscribed: the traffic's
	buyers    map[string]string // provider → the emulator's buyer id of that customer
	runID     string            // this run's event id prefix
	batches   int
	records   int
	tokens    int64
}

// Traffic: every demoTick a batch of demoBatch records per subscribed
// buyer; every demoRetryEvery-th batch is sent twice, as a client retrying
// after a lost answer would.
const (
	demoTick       = 2 * time.Second
	demoBatch      = 10
	demoRetryEvery = 10
	demoReport     = 30 * time.Second
)

func (d *demoDriver) run(ctx context.Context) {
	d.customers, d.buyers = map[string]string{}, map[string]string{}
	d.runID = strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := d.waitReady(ctx); err != nil {
		d.out.printf("the daemon did not become ready: %v", err)
		return
	}
	for _, c := range d.clouds {
		buyer, customer, err := d.subscribe(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.out.printf("%-7s buyer not subscribed: %v", c.title, err)
			continue
		}
		d.buyers[c.provider], d.customers[c.provider] = buyer, customer
	}
	billed, changed := map[string]bool{}, false // record ids already printed
	tick := time.NewTicker(demoTick)
	defer tick.Stop()
	lastReport, sentAtReport, stopped := time.Now(), 0, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// The clouds refuse usage of hours they take as future: stop
		// before the fast clock overtakes the real one.
		if !stopped && d.clock().After(time.Now().Add(-30*time.Minute)) {
			stopped = true
			d.out.printf("traffic stopped: the demo's fast clock has caught up with the clouds' (restart the demo for more)")
		}
		if !stopped {
			d.send(ctx)
		}
		if time.Since(lastReport) >= demoReport && d.records > sentAtReport {
			d.out.printf("traffic %d records in %d batches through POST /v1/usage so far (%s tokens)", d.records, d.batches, million(d.tokens))
			lastReport, sentAtReport = time.Now(), d.records
		}
		if d.printBills(billed) && !changed {
			changed = true
			d.changes(ctx)
		}
	}
}

// changes plays each cloud's lifecycle change, through its notifications.
func (d *demoDriver) changes(ctx context.Context) {
	for _, c := range d.clouds {
		if c.change.event.Event == "" {
			continue
		}
		if err := d.change(ctx, c); err != nil && ctx.Err() == nil {
			d.out.printf("%-7s %s: %v", c.title, c.change.event.Event, err)
		}
	}
}

func (d *demoDriver) change(ctx context.Context, c *demoCloud) error {
	buyer, customer := d.buyers[c.provider], d.customers[c.provider]
	if c.change.newBuyer {
		var err error
		if buyer, customer, err = d.subscribe(ctx, c); err != nil {
			return err
		}
		for range 3 { // enough for whole units to bill
			if err := d.sendOne(ctx, c.provider, customer); err != nil {
				return err
			}
		}
	}
	if buyer == "" {
		return errors.New("no subscribed buyer")
	}
	if _, err := c.admin.Event(ctx, buyer, c.change.event); err != nil {
		return fmt.Errorf("the emulator: %w", err)
	}
	said := func() { d.out.printf("%-7s buyer %s %s", c.title, customer, c.change.says) }
	if c.change.applied != nil {
		return d.waitSubscription(ctx, c.provider, customer, c.change.applied, said)
	}
	return d.waitSealed(ctx, c.provider, customer, said)
}

// waitSealed waits up to a minute until none of the customer's usage is
// open, then calls then.
func (d *demoDriver) waitSealed(ctx context.Context, provider, customer string, then func()) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var usage struct {
			Buckets []bucketView `json:"buckets"`
		}
		_, err := d.call(ctx, http.MethodGet, "/v1/usage?"+url.Values{"provider": {provider}, "customer": {customer}}.Encode(), nil, &usage)
		open := len(usage.Buckets) == 0
		for _, b := range usage.Buckets {
			open = open || b.State == "open"
		}
		if err == nil && !open {
			then()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: usage still open after a minute (%v)", customer, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitReady waits for /readyz (the store reachable, the reporters running).
func (d *demoDriver) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/readyz", nil)
		resp, err := d.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz answers %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// subscribe plays a buyer of c: the marketplace creates the buyer (the
// emulator's admin API), the buyer's browser arrives on the daemon's
// landing page with the token, and the cloud's notifications finish the
// subscription; it waits until the daemon's API shows it active.
func (d *demoDriver) subscribe(ctx context.Context, c *demoCloud) (buyer, customer string, err error) {
	b, err := c.admin.CreateBuyer(ctx, c.buyer)
	if err != nil {
		return "", "", fmt.Errorf("create a buyer on the emulator: %w", err)
	}
	req, err := c.landingRequest(ctx, d.url, b.Token)
	if err != nil {
		return "", "", err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("landing page: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return "", "", fmt.Errorf("landing page answered %s (the log has why)", resp.Status)
	}
	customer = c.customer(b)
	err = d.waitSubscription(ctx, c.provider, customer, func(s subView) bool { return s.Status == "active" }, func() {
		d.out.printf("%-7s buyer %s subscribed through the %s: active", c.title, customer, c.how)
	})
	return b.ID, customer, err
}

// waitSubscription waits up to a minute until the daemon's API shows the
// customer's subscription as ok wants it, then calls then.
func (d *demoDriver) waitSubscription(ctx context.Context, provider, customer string, ok func(subView) bool, then func()) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var sub subView
		_, err := d.call(ctx, http.MethodGet, "/v1/subscriptions/"+provider+"/"+url.PathEscape(customer), nil, &sub)
		if err == nil && ok(sub) {
			then()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: the daemon's subscription is not as expected after a minute (status %q, plan %q, %v)", customer, sub.Status, sub.Plan, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// send posts one batch per subscribed buyer.
func (d *demoDriver) send(ctx context.Context) {
	for _, c := range d.clouds {
		if customer, ok := d.customers[c.provider]; ok {
			if err := d.sendOne(ctx, c.provider, customer); err != nil {
				d.logger.Warn("demo usage batch not accepted", "err", err)
			}
		}
	}
}

// sendOne posts one batch of a customer's usage; every demoRetryEvery-th
// batch is sent twice.
func (d *demoDriver) sendOne(ctx context.Context, provider, customer string) error {

	type record struct {
		EventID  string `json:"event_id"`
		Provider string `json:"provider"`
		Customer string `json:"customer"`
		Metric   string `json:"metric"`
		Quantity int64  `json:"quantity"`
	}
	batch := struct {
		Records []record `json:"records"`
	}{}
	var tokens int64
	for range demoBatch {
		d.records++
		q := 20_000 + rand.Int64N(180_000)
		tokens += q
		batch.Records = append(batch.Records, record{EventID: "demo-" + d.runID + "-" + strconv.Itoa(d.records),
			Provider: provider, Customer: customer, Metric: "tokens", Quantity: q})
	}
	d.batches++
	sends := 1
	if d.batches%demoRetryEvery == 0 {
		sends = 2
	}
	for i := range sends {
		var res struct {
			Accepted   int `json:"accepted"`
			Duplicates int `json:"duplicates"`
		}
		if _, err := d.call(ctx, http.MethodPost, "/v1/usage", batch, &res); err != nil {
			return err
		}
		if i == 0 {
			d.tokens += tokens
		}
		if i == 1 && d.batches == demoRetryEvery {
			d.out.printf("traffic a batch sent again (a client retry): %d duplicates by event id, counted once", res.Duplicates)
		}
	}
	return nil
}

// printBills prints the lines each emulator billed since the last call,
// and reports whether every cloud has billed something.
func (d *demoDriver) printBills(seen map[string]bool) bool {
	all := true
	for _, c := range d.clouds {
		lines := c.admin.Bill().Lines
		all = all && len(lines) > 0
		for _, l := range lines {
			if seen[l.ID] {
				continue
			}
			seen[l.ID] = true
			d.out.printf("billed on %s: %s %s for %s, hour %s (record %s)", c.title,
				strconv.FormatFloat(l.Quantity, 'f', -1, 64), path.Base(l.Dimension), l.Buyer, l.Start.UTC().Format("Jan 2 15:04"), l.ID)
		}
	}
	return all
}

// call sends a JSON request to the daemon's API.
func (d *demoDriver) call(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.url+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// million writes n as millions with one decimal.
func million(n int64) string { return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + " M" }
