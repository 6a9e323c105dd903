package azure

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Usage event statuses (StatusEnum in meteringapi.v1.json).
const (
	UsageAccepted              = "Accepted"
	UsageExpired               = "Expired"
	UsageDuplicate             = "Duplicate"
	UsageError                 = "Error"
	UsageResourceNotFound      = "ResourceNotFound"
	UsageResourceNotAuthorized = "ResourceNotAuthorized"
	UsageResourceNotActive     = "ResourceNotActive"
	UsageInvalidDimension      = "InvalidDimension"
	UsageInvalidQuantity       = "InvalidQuantity"
	UsageBadArgument           = "BadArgument"
)

// MaxBatch is the most events one batchUsageEvent call takes.
const MaxBatch = 25

type eventKey struct {
	resource, dimension string
	hour                time.Time
}

// usageEventIn is UsageEvent in meteringapi.v1.json.
type usageEventIn struct {
	ResourceID         string  `json:"resourceId,omitempty"`
	ResourceURI        string  `json:"resourceUri,omitempty"`
	Quantity           float64 `json:"quantity"`
	Dimension          string  `json:"dimension"`
	EffectiveStartTime string  `json:"effectiveStartTime"`
	PlanID             string  `json:"planId"`
}

// usageEvent is UsageEventOkResponse / UsageBatchEventOkMessage.
type usageEvent struct {
	UsageEventID       string            `json:"usageEventId,omitempty"`
	Status             string            `json:"status"`
	MessageTime        string            `json:"messageTime"`
	ResourceID         string            `json:"resourceId,omitempty"`
	ResourceURI        string            `json:"resourceUri,omitempty"`
	Quantity           float64           `json:"quantity"`
	Dimension          string            `json:"dimension"`
	EffectiveStartTime string            `json:"effectiveStartTime"`
	PlanID             string            `json:"planId"`
	Error              *conflictResponse `json:"error,omitempty"`
	hour               time.Time         // the hour it bills
	offerID            string            // the subscription's offer
}

// conflictResponse is UsageEventConflictResponse.
type conflictResponse struct {
	AdditionalInfo *struct {
		AcceptedMessage *usageEvent `json:"acceptedMessage,omitempty"`
	} `json:"additionalInfo,omitempty"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

// record applies one event by Azure's rules. Call with e.mu held.
func (e *Emulator) record(in usageEventIn) *usageEvent {
	now := e.now()
	out := &usageEvent{Status: UsageAccepted, MessageTime: now.Format(time.RFC3339Nano), ResourceID: in.ResourceID,
		ResourceURI: in.ResourceURI, Quantity: in.Quantity, Dimension: in.Dimension,
		EffectiveStartTime: in.EffectiveStartTime, PlanID: in.PlanID}
	fail := func(status, msg string) *usageEvent {
		out.Status = status
		out.Error = &conflictResponse{Code: status, Message: msg}
		return out
	}
	start, err := time.Parse(time.RFC3339Nano, in.EffectiveStartTime)
	if err != nil {
		return fail(UsageBadArgument, "effectiveStartTime must be an RFC 3339 date-time")
	}
	start = start.UTC()
	switch {
	case in.ResourceID == "" || in.ResourceURI != "":
		return fail(UsageBadArgument, "give resourceId (SaaS), not resourceUri")
	case in.Dimension == "":
		return fail(UsageBadArgument, "dimension is required")
	case in.PlanID == "":
		return fail(UsageBadArgument, "planId is required")
	case !(in.Quantity > 0):
		return fail(UsageInvalidQuantity, "quantity must be above zero")
	case start.After(now):
		return fail(UsageBadArgument, "effectiveStartTime is in the future")
	case !start.After(now.Add(-24 * time.Hour)):
		return fail(UsageExpired, "usage older than 24 hours is not accepted")
	}
	e.settle()
	s := e.subs[in.ResourceID]
	if s == nil {
		return fail(UsageResourceNotFound, "no subscription "+quote(in.ResourceID))
	}
	if s.PlanID != in.PlanID {
		return fail(UsageResourceNotAuthorized, "planId "+quote(in.PlanID)+" is not the subscription's plan")
	}
	if i := slices.IndexFunc(e.cfg.Plans, func(p Plan) bool { return p.ID == s.PlanID }); i >= 0 {
		if d := e.cfg.Plans[i].Dimensions; len(d) > 0 && !slices.Contains(d, in.Dimension) {
			return fail(UsageInvalidDimension, "dimension "+quote(in.Dimension)+" is not in plan "+s.PlanID)
		}
	}
	if s.Status != StatusSubscribed {
		return fail(UsageResourceNotActive, "the subscription is "+s.Status)
	}
	k := eventKey{in.ResourceID, in.Dimension, start.Truncate(time.Hour)}
	if prev := e.events[k]; prev != nil {
		out.Status = UsageDuplicate
		out.Error = &conflictResponse{Code: "Conflict", Message: "This usage event already exist."}
		acc := *prev
		out.Error.AdditionalInfo = &struct {
			AcceptedMessage *usageEvent `json:"acceptedMessage,omitempty"`
		}{&acc}
		return out
	}
	out.UsageEventID = uuid.NewString()
	out.hour = k.hour
	out.offerID = s.OfferID
	acc := *out
	e.events[k] = &acc
	e.evlist = append(e.evlist, &acc)
	return out
}

func (e *Emulator) serveUsageEvent(w http.ResponseWriter, r *http.Request) bool {
	var in usageEventIn
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": "BadArgument", "message": "invalid body: " + err.Error()})
		return false
	}
	e.mu.Lock()
	out := e.record(in)
	e.mu.Unlock()
	switch out.Status {
	case UsageAccepted:
		writeJSON(w, http.StatusOK, out)
		return true
	case UsageDuplicate:
		writeJSON(w, http.StatusConflict, out.Error)
	default:
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": out.Status, "message": out.Error.Message, "target": "usageEventRequest",
			"details": []map[string]string{{"code": out.Status, "message": out.Error.Message, "target": "usageEventRequest"}}})
	}
	return false
}

func (e *Emulator) serveBatch(w http.ResponseWriter, r *http.Request) bool {
	var in struct {
		Request []usageEventIn `json:"request"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": "BadArgument", "message": "invalid body: " + err.Error()})
		return false
	}
	if len(in.Request) == 0 || len(in.Request) > MaxBatch {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": "BadArgument", "message": "a batch holds 1 to 25 usage events"})
		return false
	}
	e.mu.Lock()
	res := make([]*usageEvent, len(in.Request))
	for i, ev := range in.Request {
		res[i] = e.record(ev)
	}
	e.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"result": res, "count": len(res)})
	return true
}

// getUsageEvent is GetUsageEvent in meteringapi.v1.json.
type getUsageEvent struct {
	UsageDate         string  `json:"usageDate"`
	UsageResourceID   string  `json:"usageResourceId"`
	Dimension         string  `json:"dimension"`
	PlanID            string  `json:"planId"`
	OfferID           string  `json:"offerId"`
	OfferType         string  `json:"offerType"`
	ReconStatus       string  `json:"reconStatus"`
	SubmittedQuantity float64 `json:"submittedQuantity"`
	ProcessedQuantity float64 `json:"processedQuantity"`
	SubmittedCount    float64 `json:"submittedCount"`
}

func (e *Emulator) serveGetUsage(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	start, err := parseDate(q.Get("usageStartDate"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": "BadArgument", "message": "usageStartDate is required (ISO 8601)"})
		return false
	}
	end := e.now()
	if v := q.Get("UsageEndDate"); v != "" {
		if end, err = parseDate(v); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"code": "BadArgument", "message": "UsageEndDate must be ISO 8601"})
			return false
		}
	}
	out := []getUsageEvent{}
	for _, l := range e.Bill() {
		if l.Hour.Before(start) || l.Hour.After(end) ||
			(q.Get("planId") != "" && q.Get("planId") != l.PlanID) ||
			(q.Get("dimension") != "" && q.Get("dimension") != l.Dimension) ||
			(q.Get("offerId") != "" && q.Get("offerId") != l.OfferID) ||
			(q.Get("reconStatus") != "" && q.Get("reconStatus") != "Accepted") {
			continue
		}
		out = append(out, getUsageEvent{UsageDate: l.Hour.Format(time.RFC3339), UsageResourceID: l.ResourceID,
			Dimension: l.Dimension, PlanID: l.PlanID, OfferID: l.OfferID, OfferType: "SaaS", ReconStatus: "Accepted",
			SubmittedQuantity: l.Quantity, ProcessedQuantity: l.Quantity, SubmittedCount: 1})
	}
	writeJSON(w, http.StatusOK, out)
	return false
}

func parseDate(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	_, err := time.Parse(time.RFC3339, s)
	if err == nil {
		err = &time.ParseError{Value: s}
	}
	return time.Time{}, err
}

// BillLine is one accepted usage event: the bill holds exactly one per
// resource, dimension and hour.
type BillLine struct {
	ResourceID   string    `json:"resourceId"`
	Dimension    string    `json:"dimension"`
	Hour         time.Time `json:"hour"`
	Quantity     float64   `json:"quantity"`
	PlanID       string    `json:"planId"`
	OfferID      string    `json:"offerId"`
	UsageEventID string    `json:"usageEventId"`
}

// Bill returns every accepted usage event, ordered by resource, dimension and hour.
func (e *Emulator) Bill() []BillLine {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]BillLine, 0, len(e.evlist))
	for _, ev := range e.evlist {
		out = append(out, BillLine{ResourceID: ev.ResourceID, Dimension: ev.Dimension, Hour: ev.hour,
			Quantity: ev.Quantity, PlanID: ev.PlanID, OfferID: ev.offerID, UsageEventID: ev.UsageEventID})
	}
	slices.SortFunc(out, func(a, b BillLine) int {
		if c := strings.Compare(a.ResourceID, b.ResourceID); c != 0 {
			return c
		}
		if c := strings.Compare(a.Dimension, b.Dimension); c != 0 {
			return c
		}
		return a.Hour.Compare(b.Hour)
	})
	return out
}
