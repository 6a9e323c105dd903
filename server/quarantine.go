package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/saasmarket/marketplace"
)

// Rows a store could not read (a corrupt append-log entry, a torn inbox
// notification) are moved aside by the store and halt nothing else; the
// daemon counts them for /metrics, lists them on the dashboard and lets an
// operator see each one and put it back once mended:
//
//	GET  /v1/quarantine                 the list and the counts per source
//	GET  /v1/quarantine/{id}            one row, with its data
//	POST /v1/quarantine/{id}/restore    put it back, as stored or mended
//	DELETE /v1/quarantine/{id}          discard it: never billed or applied

// quarantineListLimit bounds the rows GET /v1/quarantine and the dashboard
// list; the counts stay whole.
const quarantineListLimit = 1000

// quarantineSources are the sources a quarantined row comes from, in the
// order the daemon shows them.
var quarantineSources = []string{marketplace.QuarantineUsageLog, marketplace.QuarantineInbox}

// quarantined is the API's view of a marketplace.Quarantined.
type quarantined struct {
	ID     int64     `json:"id"`
	Source string    `json:"source"`
	Ref    string    `json:"ref"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	Size   int       `json:"size"`
	// Data is the row as stored (base64 in JSON); one row's view only.
	Data []byte `json:"data,omitempty"`
	// InboxRow is an inbox row's Data as its columns, when it decodes:
	// what an operator mends and restores.
	InboxRow *marketplace.InboxRow `json:"inbox_row,omitempty"`
}

// QuarantinedView is a quarantined row as the API shows it (GET
// /v1/quarantine/{id}): what a client decodes and what a tool reading a
// data folder directly (marketplaced quarantine -data) prints.
type QuarantinedView = quarantined

// ViewQuarantined returns the API's view of q; withData adds the row's
// data (and, for an inbox row, its columns), as GET /v1/quarantine/{id}
// does.
func ViewQuarantined(q *marketplace.Quarantined, withData bool) QuarantinedView {
	v := quarantined{ID: q.ID, Source: q.Source, Ref: q.Ref, Reason: q.Reason, At: q.At.UTC(), Size: len(q.Data)}
	if withData {
		v.Data = q.Data
		if q.Source == marketplace.QuarantineInbox {
			var row marketplace.InboxRow
			if json.Unmarshal(q.Data, &row) == nil {
				v.InboxRow = &row
			}
		}
	}
	return v
}

// quarantineCounts returns the count per source, every source present.
func quarantineCounts(ctx context.Context, qs marketplace.QuarantineStore) (map[string]int64, error) {
	got, err := qs.CountQuarantined(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(quarantineSources))
	for _, src := range quarantineSources {
		out[src] = 0
	}
	for src, n := range got {
		out[src] = n
	}
	return out, nil
}

// quarantineStore returns the store's quarantine, or answers 503 when the
// daemon was built without one.
func (s *Server) quarantineStore(w http.ResponseWriter, r *http.Request) (marketplace.QuarantineStore, bool) {
	if s.deps.Quarantine == nil {
		writeError(w, r, http.StatusServiceUnavailable, "unavailable", "this daemon's store keeps no quarantine")
		return nil, false
	}
	return s.deps.Quarantine, true
}

// quarantinedRow is quarantineStore and the {id} path parameter of the
// routes of one row; false after an error response.
func (s *Server) quarantinedRow(w http.ResponseWriter, r *http.Request) (marketplace.QuarantineStore, int64, bool) {
	qs, ok := s.quarantineStore(w, r)
	if !ok {
		return nil, 0, false
	}
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id < 1 {
		writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("id: want a quarantined row's id (a positive whole number), got %q", v))
		return nil, 0, false
	}
	return qs, id, true
}

// listQuarantine is GET /v1/quarantine: the rows, oldest first, without
// their data, and the count per source.
func (s *Server) listQuarantine(w http.ResponseWriter, r *http.Request) {
	qs, ok := s.quarantineStore(w, r)
	if !ok {
		return
	}
	limit := quarantineListLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > quarantineListLimit {
			writeError(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("limit: want 1 to %d, got %q", quarantineListLimit, v))
			return
		}
		limit = n
	}
	rows, err := qs.ListQuarantined(r.Context(), limit)
	if err != nil {
		s.unavailable(w, r, "listing quarantined rows", err)
		return
	}
	counts, err := quarantineCounts(r.Context(), qs)
	if err != nil {
		s.unavailable(w, r, "counting quarantined rows", err)
		return
	}
	out := struct {
		Quarantined []quarantined    `json:"quarantined"`
		Counts      map[string]int64 `json:"counts"`
	}{Quarantined: make([]quarantined, 0, len(rows)), Counts: counts}
	for i := range rows {
		out.Quarantined = append(out.Quarantined, ViewQuarantined(&rows[i], false))
	}
	writeJSON(w, http.StatusOK, out)
}

// getQuarantined is GET /v1/quarantine/{id}: one row with its data.
func (s *Server) getQuarantined(w http.ResponseWriter, r *http.Request) {
	qs, id, ok := s.quarantinedRow(w, r)
	if !ok {
		return
	}
	q, err := qs.GetQuarantined(r.Context(), id)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		writeError(w, r, http.StatusNotFound, "not_found", NotQuarantined(id))
	case err != nil:
		s.unavailable(w, r, "reading a quarantined row", err)
	default:
		writeJSON(w, http.StatusOK, ViewQuarantined(q, true))
	}
}

// restoreRequest is the body of POST /v1/quarantine/{id}/restore.
type restoreRequest struct {
	// Data is the mended row (base64); absent, the row goes back as
	// stored.
	Data []byte `json:"data"`
}

// restoreQuarantined is POST /v1/quarantine/{id}/restore: the row goes
// back where it came from, as stored or as mended, and leaves the
// quarantine; the store refuses a row it still cannot read (400, saying
// what is wrong) and keeps it quarantined.
func (s *Server) restoreQuarantined(w http.ResponseWriter, r *http.Request) {
	qs, id, ok := s.quarantinedRow(w, r)
	if !ok {
		return
	}
	var req restoreRequest
	const shape = `{"data": "<the mended row, base64>"}`
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		refuseBody(w, r, err, s.cfg.MaxBodyBytes, shape)
		return
	}
	// No body (or only white space): the row goes back as stored.
	if len(bytes.TrimSpace(body)) > 0 {
		if !requireJSON(w, r) {
			return
		}
		if err := jsonv2.Unmarshal(body, &req, jsonv2.RejectUnknownMembers(true)); err != nil {
			refuseBody(w, r, err, s.cfg.MaxBodyBytes, shape)
			return
		}
	}
	q, err := qs.GetQuarantined(r.Context(), id)
	if errors.Is(err, marketplace.ErrNotFound) {
		writeError(w, r, http.StatusNotFound, "not_found", NotQuarantined(id))
		return
	}
	if err != nil {
		s.unavailable(w, r, "reading a quarantined row", err)
		return
	}
	err = qs.RestoreQuarantined(r.Context(), id, req.Data)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		writeError(w, r, http.StatusNotFound, "not_found", NotQuarantined(id))
		return
	case errors.Is(err, marketplace.ErrInvalidInput):
		writeError(w, r, http.StatusBadRequest, "invalid_row", fmt.Sprintf("quarantined row %d (%s, %s) stays quarantined: %v", id, q.Source, q.Ref, err))
		return
	case err != nil:
		s.unavailable(w, r, "restoring a quarantined row", err)
		return
	}
	if req.Data != nil {
		q.Data = req.Data
	}
	s.log.Info("quarantined row restored", "request_id", RequestID(r.Context()), "id", id, "source", q.Source, "ref", q.Ref,
		"mended", req.Data != nil)
	writeJSON(w, http.StatusOK, struct {
		Restored quarantined `json:"restored"`
	}{ViewQuarantined(q, true)})
}

// discardQuarantined is DELETE /v1/quarantine/{id}: the operator gave up
// on the row (garbage that cannot be mended), so it leaves the quarantine
// and what it held is never billed or applied. The answer is the row as it
// was, data and all, the last copy the daemon has of it.
func (s *Server) discardQuarantined(w http.ResponseWriter, r *http.Request) {
	qs, id, ok := s.quarantinedRow(w, r)
	if !ok {
		return
	}
	q, err := qs.DiscardQuarantined(r.Context(), id)
	switch {
	case errors.Is(err, marketplace.ErrNotFound):
		writeError(w, r, http.StatusNotFound, "not_found", NotQuarantined(id))
		return
	case err != nil:
		s.unavailable(w, r, "discarding a quarantined row", err)
		return
	}
	// Warn, not Info: usage or a notification is given up for good. The
	// data stays out of the log (it may be large, and is the caller's to
	// keep from the answer).
	s.log.Warn("quarantined row discarded", "request_id", RequestID(r.Context()), "id", q.ID, "source", q.Source, "ref", q.Ref,
		"reason", q.Reason, "size", len(q.Data))
	writeJSON(w, http.StatusOK, struct {
		Discarded quarantined `json:"discarded"`
	}{ViewQuarantined(q, true)})
}

// refreshQuarantined sets the quarantine gauges before a scrape.
func (s *Server) refreshQuarantined(ctx context.Context) {
	if s.deps.Quarantine == nil {
		return
	}
	counts, err := quarantineCounts(ctx, s.deps.Quarantine)
	if err != nil {
		s.log.Warn("counting quarantined rows", "err", err)
		return
	}
	for src, n := range counts {
		s.metrics.Quarantined(src, n)
	}
}

// NotQuarantined says that no row id is quarantined, and why that may be:
// the 404 of the quarantine routes, and what marketplaced quarantine says
// on a data folder.
func NotQuarantined(id int64) string {
	return fmt.Sprintf("no quarantined row %d (restored or discarded already, or never quarantined)", id)
}
