package gcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Entitlement states of the Procurement API.
const (
	StateActivationRequested       = "ENTITLEMENT_ACTIVATION_REQUESTED"
	StateActive                    = "ENTITLEMENT_ACTIVE"
	StatePendingCancellation       = "ENTITLEMENT_PENDING_CANCELLATION"
	StateCancelled                 = "ENTITLEMENT_CANCELLED"
	StatePendingPlanChange         = "ENTITLEMENT_PENDING_PLAN_CHANGE"
	StatePendingPlanChangeApproval = "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL"
	StateSuspended                 = "ENTITLEMENT_SUSPENDED"
)

// SignupApproval is the name of the account approval the seller grants
// once the buyer finished signing up.
const SignupApproval = "signup"

// Page sizes, as the discovery document gives them: accounts default to 25
// (at most 200), entitlements to 200.
const (
	accountsPageSize     = 25
	entitlementsPageSize = 200
	maxPageSize          = 200
)

// apiError is a refusal with its HTTP code and Google status.
type apiError struct {
	code   int
	status string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &apiError{http.StatusNotFound, "NOT_FOUND", fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf(format, args...)}
}

func precondition(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "FAILED_PRECONDITION", fmt.Sprintf(format, args...)}
}

func writeAPIError(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae.code, ae.status, "%s", ae.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, "INTERNAL", "%v", err)
}

// checkProvider refuses another provider's path.
func (e *Emulator) checkProvider(r *http.Request) error {
	if p := r.PathValue("p"); p != e.cfg.ProviderID {
		return &apiError{http.StatusForbidden, "PERMISSION_DENIED", fmt.Sprintf("provider %q is not this emulator's (%q)", p, e.cfg.ProviderID)}
	}
	return nil
}

func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return badRequest("read body: %v", err)
	}
	if len(body) == 0 {
		return nil
	}
	return strictJSON(body, v)
}

// strictJSON decodes body into v and refuses a field v does not have, as
// Google's JSON mapping does ("Unknown name").
func strictJSON(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return badRequest("Invalid JSON payload received. Unknown name %s: Cannot find field.", name)
		}
		return badRequest("Invalid JSON payload received. %v", err)
	}
	return nil
}

func (e *Emulator) accountName(id string) string {
	return "providers/" + e.cfg.ProviderID + "/accounts/" + id
}

func (e *Emulator) entitlementName(id string) string {
	return "providers/" + e.cfg.ProviderID + "/entitlements/" + id
}

// page returns the page of n items that token and size select, and the
// next token.
func page(n int, token, size string, defaultPageSize int) (lo, hi int, next string, err error) {
	ps := defaultPageSize
	if size != "" {
		ps, err = strconv.Atoi(size)
		if err != nil || ps < 0 {
			return 0, 0, "", badRequest("invalid pageSize %q", size)
		}
		if ps == 0 {
			ps = defaultPageSize
		}
		ps = min(ps, maxPageSize)
	}
	if token != "" {
		lo, err = strconv.Atoi(strings.TrimPrefix(token, "offset-"))
		if err != nil || !strings.HasPrefix(token, "offset-") || lo < 0 || lo > n {
			return 0, 0, "", badRequest("invalid pageToken %q", token)
		}
	}
	hi = min(lo+ps, n)
	if hi < n {
		next = "offset-" + strconv.Itoa(hi)
	}
	return lo, hi, next, nil
}

// --- accounts ---

func (e *Emulator) listAccounts(w http.ResponseWriter, r *http.Request) {
	if err := e.checkProvider(r); err != nil {
		writeAPIError(w, err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls["accounts.list"]++
	ids := sortedKeys(e.accounts)
	lo, hi, next, err := page(len(ids), r.URL.Query().Get("pageToken"), r.URL.Query().Get("pageSize"), accountsPageSize)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	out := []*account{}
	for _, id := range ids[lo:hi] {
		out = append(out, e.accounts[id])
	}
	resp := map[string]any{"accounts": out}
	if next != "" {
		resp["nextPageToken"] = next
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) account(w http.ResponseWriter, r *http.Request) {
	if err := e.checkProvider(r); err != nil {
		writeAPIError(w, err)
		return
	}
	id, verb, _ := strings.Cut(r.PathValue("name"), ":")
	if r.Method == http.MethodGet {
		if verb != "" {
			writeAPIError(w, notFound("unknown method %q", verb))
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.calls["accounts.get"]++
		a, ok := e.accounts[id]
		if !ok {
			writeAPIError(w, notFound("account %s not found", e.accountName(id)))
			return
		}
		writeJSON(w, http.StatusOK, a)
		return
	}
	var req struct {
		ApprovalName string            `json:"approvalName"`
		Reason       string            `json:"reason"`
		Properties   map[string]string `json:"properties"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls["accounts."+verb]++
	a, ok := e.accounts[id]
	if !ok {
		writeAPIError(w, notFound("account %s not found", e.accountName(id)))
		return
	}
	now := stamp(e.now())
	var err error
	switch verb {
	case "approve", "reject":
		err = setApproval(a, req.ApprovalName, map[string]string{"approve": "APPROVED", "reject": "REJECTED"}[verb], req.Reason, now)
		if err == nil && verb == "approve" && len(req.Properties) > 0 {
			a.Properties = req.Properties
		}
	case "reset":
		for i := range a.Approvals {
			a.Approvals[i].State, a.Approvals[i].Reason, a.Approvals[i].UpdateTime = "PENDING", "", now
		}
	default:
		err = notFound("unknown method %q", verb)
	}
	if err != nil {
		writeAPIError(w, err)
		return
	}
	a.UpdateTime = now
	writeJSON(w, http.StatusOK, struct{}{})
}

func setApproval(a *account, name, state, reason, now string) error {
	if name == "" {
		if len(a.Approvals) != 1 {
			return badRequest("approvalName is required: the account has %d approvals", len(a.Approvals))
		}
		name = a.Approvals[0].Name
	}
	for i := range a.Approvals {
		if a.Approvals[i].Name == name {
			a.Approvals[i].State, a.Approvals[i].Reason, a.Approvals[i].UpdateTime = state, reason, now
			return nil
		}
	}
	return badRequest("account %s has no approval %q", a.Name, name)
}

// --- entitlements ---

func (e *Emulator) listEntitlements(w http.ResponseWriter, r *http.Request) {
	if err := e.checkProvider(r); err != nil {
		writeAPIError(w, err)
		return
	}
	match, err := parseFilter(r.URL.Query().Get("filter"))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls["entitlements.list"]++
	var hits []*entitlement
	for _, id := range e.entOrder {
		if ent := e.ents[id]; match(ent) {
			hits = append(hits, ent)
		}
	}
	lo, hi, next, err := page(len(hits), r.URL.Query().Get("pageToken"), r.URL.Query().Get("pageSize"), entitlementsPageSize)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	resp := map[string]any{"entitlements": append([]*entitlement{}, hits[lo:hi]...)}
	if next != "" {
		resp["nextPageToken"] = next
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) entitlement(w http.ResponseWriter, r *http.Request) {
	if err := e.checkProvider(r); err != nil {
		writeAPIError(w, err)
		return
	}
	id, verb, _ := strings.Cut(r.PathValue("name"), ":")
	switch {
	case r.Method == http.MethodGet && verb == "":
		e.mu.Lock()
		defer e.mu.Unlock()
		e.calls["entitlements.get"]++
		ent, ok := e.ents[id]
		if !ok {
			writeAPIError(w, notFound("entitlement %s not found", e.entitlementName(id)))
			return
		}
		writeJSON(w, http.StatusOK, ent)
		return
	case r.Method == http.MethodPatch && verb == "":
		verb = "patch"
	case r.Method == http.MethodPost && verb != "":
	default:
		writeAPIError(w, notFound("no method %s %s", r.Method, r.URL.Path))
		return
	}
	var req struct {
		PendingPlanName string `json:"pendingPlanName"`
		Reason          string `json:"reason"`
		MessageToUser   string `json:"messageToUser"`
	}
	if err := decodeBody(r, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	var evs []event
	e.mu.Lock()
	e.calls["entitlements."+verb]++
	ent, ok := e.ents[id]
	if !ok {
		e.mu.Unlock()
		writeAPIError(w, notFound("entitlement %s not found", e.entitlementName(id)))
		return
	}
	err := e.transitionLocked(ent, verb, req.PendingPlanName, req.Reason, req.MessageToUser, r.URL.Query().Get("updateMask"), &evs)
	resp := *ent
	e.mu.Unlock()
	if err != nil {
		writeAPIError(w, err)
		return
	}
	e.publish(r.Context(), evs)
	if verb == "patch" {
		writeJSON(w, http.StatusOK, &resp)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// transitionLocked applies one seller method to ent.
func (e *Emulator) transitionLocked(ent *entitlement, verb, plan, reason, msg, mask string, evs *[]event) error {
	now := e.now()
	need := func(states ...string) error {
		if !slices.Contains(states, ent.State) {
			return precondition("entitlement %s is %s; %s needs %s", ent.Name, ent.State, verb, strings.Join(states, " or "))
		}
		return nil
	}
	switch verb {
	case "approve":
		if err := need(StateActivationRequested); err != nil {
			return err
		}
		ent.State = StateActive
		*evs = append(*evs, e.entEventLocked("ENTITLEMENT_ACTIVE", ent, now))
	case "reject":
		if err := need(StateActivationRequested); err != nil {
			return err
		}
		ent.State, ent.CancellationReason = StateCancelled, "rejected: "+reason
		*evs = append(*evs, e.entEventLocked("ENTITLEMENT_CANCELLED", ent, now))
	case "approvePlanChange", "rejectPlanChange":
		if err := need(StatePendingPlanChangeApproval); err != nil {
			return err
		}
		if plan == "" || plan != ent.NewPendingPlan {
			return badRequest("pendingPlanName %q does not match the pending plan %q", plan, ent.NewPendingPlan)
		}
		ent.State = StateActive
		if verb == "approvePlanChange" {
			ent.Plan = plan
			*evs = append(*evs, e.entEventLocked("ENTITLEMENT_PLAN_CHANGED", ent, now))
		} else {
			*evs = append(*evs, e.entEventLocked("ENTITLEMENT_PLAN_CHANGE_CANCELLED", ent, now))
		}
		ent.NewPendingPlan = ""
	case "suspend":
		// The discovery document calls this "not yet supported"; the
		// emulator serves it anyway so that gcp.SuspendEntitlement and the
		// SUSPENDED state can be tested (docs/emulators.md).
		if err := need(StateActive, StatePendingPlanChange, StatePendingPlanChangeApproval); err != nil {
			return err
		}
		ent.State = StateSuspended
	case "patch":
		if mask != "" && mask != "messageToUser" {
			return badRequest("updateMask %q: only messageToUser can be updated", mask)
		}
		if err := need(StateActivationRequested, StatePendingPlanChangeApproval); err != nil {
			return err
		}
		ent.MessageToUser = msg
	default:
		return notFound("unknown method %q", verb)
	}
	if verb != "patch" {
		ent.MessageToUser = ""
	}
	ent.UpdateTime = stamp(now)
	return nil
}

// parseFilter compiles the subset of the list filter syntax the emulator
// understands: predicates attr=value, attr!=value and attr:value joined by
// AND (or by a space). OR, NOT and parentheses are refused.
func parseFilter(f string) (func(*entitlement) bool, error) {
	type pred struct {
		attr, op, val string
	}
	var preds []pred
	for tok := range strings.FieldsSeq(f) {
		if tok == "AND" {
			continue
		}
		if tok == "OR" || tok == "NOT" || strings.ContainsAny(tok, "()") {
			return nil, badRequest("filter %q: the emulator supports only predicates joined by AND", f)
		}
		var p pred
		switch {
		case strings.Contains(tok, "!="):
			p.attr, p.val, _ = strings.Cut(tok, "!=")
			p.op = "!="
		case strings.Contains(tok, "="):
			p.attr, p.val, _ = strings.Cut(tok, "=")
			p.op = "="
		case strings.Contains(tok, ":"):
			p.attr, p.val, _ = strings.Cut(tok, ":")
			p.op = "="
		default:
			return nil, badRequest("filter %q: %q is not a predicate", f, tok)
		}
		if uq, err := strconv.Unquote(p.val); err == nil {
			p.val = uq
		}
		switch p.attr {
		case "account", "plan", "newPendingPlan", "new_pending_plan", "state", "product_external_name", "offer", "product":
		default:
			return nil, badRequest("filter %q: unsupported attribute %q", f, p.attr)
		}
		preds = append(preds, p)
	}
	return func(ent *entitlement) bool {
		for _, p := range preds {
			var got string
			switch p.attr {
			case "account":
				got = path.Base(ent.Account)
			case "plan":
				got = ent.Plan
			case "newPendingPlan", "new_pending_plan":
				got = ent.NewPendingPlan
			case "product_external_name", "product":
				got = ent.ProductExternal
			case "offer":
				got = ent.Offer
			case "state":
				got = ent.State
				want := strings.ToUpper(p.val)
				if !strings.HasPrefix(want, "ENTITLEMENT_") {
					want = "ENTITLEMENT_" + want
				}
				if (got == want) != (p.op == "=") {
					return false
				}
				continue
			}
			if (got == p.val) != (p.op == "=") {
				return false
			}
		}
		return true
	}, nil
}
