package gcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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

// decodeBody decodes the request body of method ("accounts.approve", …)
// into v, refusing a field that the method's request message does not
// have (requestFields), as Google's JSON mapping does.
func decodeBody(r *http.Request, method string, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return badRequest("read body: %v", err)
	}
	if len(body) == 0 {
		return nil
	}
	fields, ok := requestFields[method]
	if !ok {
		return strictJSON(body, v)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return badRequest("Invalid JSON payload received. %v", err)
	}
	norm := make(map[string]json.RawMessage, len(m))
	for _, k := range sortedKeys(m) {
		name := lowerCamel(k) // the proto field name (snake_case) is accepted too
		if !slices.Contains(fields, name) {
			return badRequest("Invalid JSON payload received. Unknown name %q: Cannot find field.", k)
		}
		norm[name] = m[k]
	}
	b, _ := json.Marshal(norm)
	if err := json.Unmarshal(b, v); err != nil {
		return badRequest("Invalid JSON payload received. %v", err)
	}
	return nil
}

// lowerCamel turns a proto field name (pending_plan_name) into its JSON
// name (pendingPlanName).
func lowerCamel(s string) string {
	parts := strings.Split(s, "_")
	for i := 1; i < len(parts); i++ {
		if p := parts[i]; p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "")
}

// requestFields are the fields of each method's request message in
// cloudcommerceprocurement-api.json (entitlements.patch takes an
// Entitlement, whose output-only fields Google ignores).
var requestFields = map[string][]string{
	"accounts.approve":               {"approvalName", "properties", "reason"},
	"accounts.reject":                {"approvalName", "reason"},
	"accounts.reset":                 {},
	"entitlements.approve":           {"entitlementMigrated", "properties"},
	"entitlements.reject":            {"reason"},
	"entitlements.approvePlanChange": {"pendingPlanName"},
	"entitlements.rejectPlanChange":  {"pendingPlanName", "reason"},
	"entitlements.suspend":           {"reason"},
	"entitlements.patch": {"account", "cancellationReason", "consumers", "createTime", "entitlementBenefitIds",
		"inputProperties", "messageToUser", "name", "newOfferEndTime", "newOfferStartTime", "newPendingOffer",
		"newPendingOfferDuration", "newPendingPlan", "offer", "offerDuration", "offerEndTime", "orderId", "plan",
		"product", "productExternalName", "provider", "quoteExternalName", "state", "subscriptionEndTime",
		"updateTime", "usageReportingId"},
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
	if err := decodeBody(r, "accounts."+verb, &req); err != nil {
		writeAPIError(w, err)
		return
	}
	var evs []event
	err := func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.calls["accounts."+verb]++
		a, ok := e.accounts[id]
		if !ok {
			return notFound("account %s not found", e.accountName(id))
		}
		t := e.now()
		now := stamp(t)
		switch verb {
		case "approve", "reject":
			if err := setApproval(a, req.ApprovalName, map[string]string{"approve": "APPROVED", "reject": "REJECTED"}[verb], truncateReason(req.Reason), now); err != nil {
				return err
			}
			if verb == "approve" && len(req.Properties) > 0 {
				a.Properties = req.Properties
			}
		case "reset":
			for i := range a.Approvals {
				a.Approvals[i].State, a.Approvals[i].Reason, a.Approvals[i].UpdateTime = "PENDING", "", now
			}
			// accounts.reset "Resets an Account and cancels all
			// associated Entitlements" (the discovery document).
			for _, eid := range e.entOrder {
				ent := e.ents[eid]
				if ent.Account != a.Name || ent.State == StateCancelled {
					continue
				}
				e.cancelLocked(ent, "unknown", t, &evs)
			}
		default:
			return notFound("unknown method %q", verb)
		}
		a.UpdateTime = now
		return nil
	}()
	if err != nil {
		writeAPIError(w, err)
		return
	}
	e.publish(r.Context(), evs)
	writeJSON(w, http.StatusOK, struct{}{})
}

// maxReasonBytes: a request's reason is "Max allowed length: 256 bytes.
// Longer strings will be truncated." (cloudcommerceprocurement-api.json).
const maxReasonBytes = 256

// truncateReason cuts reason to maxReasonBytes, at a character boundary.
func truncateReason(reason string) string {
	if len(reason) <= maxReasonBytes {
		return reason
	}
	cut := maxReasonBytes
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
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
		PendingPlanName     string            `json:"pendingPlanName"`
		Reason              string            `json:"reason"`
		MessageToUser       string            `json:"messageToUser"`
		Properties          map[string]string `json:"properties"`
		EntitlementMigrated string            `json:"entitlementMigrated"`
	}
	if err := decodeBody(r, "entitlements."+verb, &req); err != nil {
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
	err := e.transitionLocked(ent, verb, req.PendingPlanName, truncateReason(req.Reason), req.MessageToUser, r.URL.Query().Get("updateMask"), &evs)
	if err == nil && verb == "approve" && len(req.Properties) > 0 {
		ent.Properties = req.Properties
	}
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

// Settle activates the approved entitlements whose ActivationDelay has
// passed and publishes their ENTITLEMENT_ACTIVE events. Every request to
// the emulator settles first; a served emulator also settles by itself.
func (e *Emulator) Settle(ctx context.Context) {
	e.mu.Lock()
	var evs []event
	now := e.now()
	e.pending = slices.DeleteFunc(e.pending, func(id string) bool {
		ent := e.ents[id] // nil once deleted
		switch {
		case ent == nil:
		case now.Before(ent.activateAt):
			return false
		case ent.State == StateActivationRequested:
			e.activateLocked(ent, now, &evs)
		default: // cancelled meanwhile, or activated by the admin API
			ent.activateAt = time.Time{}
		}
		return true
	})
	e.mu.Unlock()
	e.publish(ctx, evs)
}

// cancelLocked cancels ent at once for reason and queues its
// ENTITLEMENT_CANCELLED event; its final usage is taken for
// FinalReportGrace from now.
func (e *Emulator) cancelLocked(ent *entitlement, reason string, now time.Time, evs *[]event) {
	ent.State, ent.CancellationReason, ent.NewPendingPlan, ent.SubscriptionEndTime = StateCancelled, reason, "", ""
	ent.MessageToUser, ent.cancelledAt, ent.UpdateTime = "", now, stamp(now)
	*evs = append(*evs, e.entEventLocked("ENTITLEMENT_CANCELLED", ent, now))
}

// activateLocked makes an approved entitlement active and queues its
// ENTITLEMENT_ACTIVE event.
func (e *Emulator) activateLocked(ent *entitlement, now time.Time, evs *[]event) {
	ent.State, ent.MessageToUser, ent.UpdateTime, ent.activateAt = StateActive, "", stamp(now), time.Time{}
	*evs = append(*evs, e.entEventLocked("ENTITLEMENT_ACTIVE", ent, now))
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
		if d := e.cfg.ActivationDelay; d > 0 {
			// "If approved, the entitlement transitions to the
			// ENTITLEMENT_ACTIVE state after … a short processing delay":
			// it stays ENTITLEMENT_ACTIVATION_REQUESTED meanwhile, and an
			// approval again changes nothing.
			if ent.activateAt.IsZero() {
				ent.activateAt = now.Add(d)
				e.pending = append(e.pending, idOf(ent.Name))
			}
			return nil
		}
		e.activateLocked(ent, now, evs)
	case "reject":
		if err := need(StateActivationRequested); err != nil {
			return err
		}
		if !ent.activateAt.IsZero() {
			return precondition("entitlement %s is approved and becoming active; reject needs an entitlement not yet approved", ent.Name)
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

// parseFilter compiles a list filter, as in AIP-160: restrictions
// attr=value, attr!=value and attr:value (values bare or double-quoted,
// quotes allowing spaces), joined by AND (or a space), OR (which binds
// tighter than AND), NOT or '-', and parentheses.
func parseFilter(f string) (func(*entitlement) bool, error) {
	toks, err := filterTokens(f)
	if err != nil {
		return nil, err
	}
	p := &filterParser{f: f, toks: toks}
	if len(toks) == 0 {
		return func(*entitlement) bool { return true }, nil
	}
	m, err := p.expression()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, badRequest("filter %q: unexpected %q", f, p.toks[p.i].text)
	}
	return m, nil
}

type filterToken struct {
	text      string // "(", ")", "AND", "OR", "NOT", "-" or a restriction
	attr, val string
	neq       bool
}

func filterTokens(f string) ([]filterToken, error) {
	var toks []filterToken
	for i := 0; i < len(f); {
		c := f[i]
		switch {
		case c == ' ' || c == '\t':
			i++
			continue
		case c == '(' || c == ')' || c == '-':
			toks = append(toks, filterToken{text: string(c)})
			i++
			continue
		}
		start := i
		for i < len(f) && !strings.ContainsRune(" \t()=:!", rune(f[i])) {
			i++
		}
		word := f[start:i]
		if i == len(f) || f[i] == ' ' || f[i] == '\t' || f[i] == '(' || f[i] == ')' {
			if word == "AND" || word == "OR" || word == "NOT" {
				toks = append(toks, filterToken{text: word})
				continue
			}
			return nil, badRequest("filter %q: %q is not a restriction (attr=value)", f, word)
		}
		t := filterToken{attr: word}
		switch {
		case strings.HasPrefix(f[i:], "!="):
			t.neq, i = true, i+2
		case f[i] == '=' || f[i] == ':':
			i++
		default:
			return nil, badRequest("filter %q: bad operator after %q", f, word)
		}
		if i < len(f) && f[i] == '"' {
			end := i + 1
			for end < len(f) && f[end] != '"' {
				if f[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(f) {
				return nil, badRequest("filter %q: unterminated quote", f)
			}
			v, err := strconv.Unquote(f[i : end+1])
			if err != nil {
				return nil, badRequest("filter %q: %v", f, err)
			}
			t.val, i = v, end+1
		} else {
			vs := i
			for i < len(f) && !strings.ContainsRune(" \t()", rune(f[i])) {
				i++
			}
			t.val = f[vs:i]
		}
		if _, ok := filterAttrs[t.attr]; !ok {
			return nil, badRequest("filter %q: unsupported attribute %q", f, t.attr)
		}
		t.text = f[start:i]
		toks = append(toks, t)
	}
	return toks, nil
}

// filterAttrs are the filterable attributes of an entitlement. Those the
// emulator holds no data for read as empty, so they match only "".
var filterAttrs = map[string]func(*entitlement) string{
	"account":                  func(e *entitlement) string { return path.Base(e.Account) },
	"plan":                     func(e *entitlement) string { return e.Plan },
	"newPendingPlan":           func(e *entitlement) string { return e.NewPendingPlan },
	"new_pending_plan":         func(e *entitlement) string { return e.NewPendingPlan },
	"product_external_name":    func(e *entitlement) string { return e.ProductExternal },
	"product":                  func(e *entitlement) string { return e.ProductExternal },
	"offer":                    func(e *entitlement) string { return e.Offer },
	"state":                    func(e *entitlement) string { return e.State },
	"consumers.project":        func(e *entitlement) string { return strings.TrimPrefix(e.UsageReportingID, "project_number:") },
	"customer_billing_account": func(*entitlement) string { return "" },
	"quote_external_name":      func(*entitlement) string { return "" },
	"new_pending_offer":        func(*entitlement) string { return "" },
	"services":                 func(*entitlement) string { return "" },
	"change_history.new_offer": func(*entitlement) string { return "" },
}

type filterParser struct {
	f    string
	toks []filterToken
	i    int
}

type matcher = func(*entitlement) bool

func (p *filterParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i].text
	}
	return ""
}

// expression := sequence {AND sequence}; a sequence is factors side by
// side (an implicit AND).
func (p *filterParser) expression() (matcher, error) {
	var all []matcher
	for {
		m, err := p.factor()
		if err != nil {
			return nil, err
		}
		all = append(all, m)
		if p.peek() == "AND" {
			p.i++
			continue
		}
		if t := p.peek(); t == "" || t == ")" {
			break
		}
	}
	return func(e *entitlement) bool {
		for _, m := range all {
			if !m(e) {
				return false
			}
		}
		return true
	}, nil
}

// factor := term {OR term}
func (p *filterParser) factor() (matcher, error) {
	var any []matcher
	for {
		m, err := p.term()
		if err != nil {
			return nil, err
		}
		any = append(any, m)
		if p.peek() != "OR" {
			break
		}
		p.i++
	}
	return func(e *entitlement) bool {
		for _, m := range any {
			if m(e) {
				return true
			}
		}
		return false
	}, nil
}

// term := [NOT | -] (restriction | "(" expression ")")
func (p *filterParser) term() (matcher, error) {
	if t := p.peek(); t == "NOT" || t == "-" {
		p.i++
		m, err := p.term()
		if err != nil {
			return nil, err
		}
		return func(e *entitlement) bool { return !m(e) }, nil
	}
	if p.i >= len(p.toks) {
		return nil, badRequest("filter %q: ends too early", p.f)
	}
	t := p.toks[p.i]
	p.i++
	switch t.text {
	case "(":
		m, err := p.expression()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, badRequest("filter %q: missing )", p.f)
		}
		p.i++
		return m, nil
	case ")", "AND", "OR":
		return nil, badRequest("filter %q: unexpected %q", p.f, t.text)
	}
	get, want := filterAttrs[t.attr], t.val
	if t.attr == "state" {
		want = strings.ToUpper(want)
		if !strings.HasPrefix(want, "ENTITLEMENT_") {
			want = "ENTITLEMENT_" + want
		}
	}
	return func(e *entitlement) bool { return (get(e) == want) != t.neq }, nil
}
