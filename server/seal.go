package server

import (
	"fmt"
	"mime"
	"net/http"

	jsonv2 "github.com/go-json-experiment/json"
)

// sealRequest is the body of POST /v1/usage/seal.
type sealRequest struct {
	Provider string `json:"provider"`
	Customer string `json:"customer"`
}

// postSeal is POST /v1/usage/seal: a customer's final flush. Every open
// bucket of the customer is sealed now (remainders settled, as when a
// subscription ends) and reported by the cloud's reporter; an operator's
// tool (marketplaced seal), not a service's hot path.
func (s *Server) postSeal(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
		return
	}
	var req sealRequest
	if err := jsonv2.UnmarshalRead(http.MaxBytesReader(w, r.Body, 64<<10), &req, jsonv2.RejectUnknownMembers(true)); err != nil {
		writeError(w, r, http.StatusBadRequest, "invalid_json", `the body is not {"provider": "...", "customer": "..."}: `+err.Error())
		return
	}
	p, ok := s.provider(w, r, req.Provider, true)
	if !ok {
		return
	}
	if req.Customer == "" {
		writeError(w, r, http.StatusBadRequest, "invalid_request", "customer: is required")
		return
	}
	n, err := s.deps.Ledger.SealCustomer(r.Context(), p, req.Customer)
	if err != nil {
		s.unavailable(w, r, fmt.Sprintf("sealing the usage of %s customer %q", p, req.Customer), err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Sealed int `json:"sealed"`
	}{n})
}
