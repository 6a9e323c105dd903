package server

import (
	"fmt"
	"net/http"
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
	if !requireJSON(w, r) {
		return
	}
	var req sealRequest
	if !decodeJSON(w, r, 64<<10, &req, `{"provider": "...", "customer": "..."}`) {
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
