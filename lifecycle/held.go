package lifecycle

import (
	"bytes"
	"maps"
	"net/http"
)

// HeldResponse is the http.ResponseWriter a landing handler gives the
// seller's LinkFunc: it keeps what Link writes (a redirect, a page, a
// cookie) until the sign-up is complete, so that a buyer is sent on only
// once the subscription is stored, and gets an error page otherwise.
type HeldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// NewHeldResponse returns an empty held response.
func NewHeldResponse() *HeldResponse { return &HeldResponse{header: http.Header{}} }

// Header implements http.ResponseWriter.
func (h *HeldResponse) Header() http.Header { return h.header }

// WriteHeader implements http.ResponseWriter; the first status counts.
func (h *HeldResponse) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

// Write implements http.ResponseWriter.
func (h *HeldResponse) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return h.body.Write(b)
}

// Wrote reports whether Link wrote a response (a status or a body).
func (h *HeldResponse) Wrote() bool { return h.status != 0 }

// Release copies the held headers to w and, when Link wrote a response,
// writes it and reports true; otherwise the caller writes its own page
// (with the held headers, such as a session cookie).
func (h *HeldResponse) Release(w http.ResponseWriter) bool {
	maps.Copy(w.Header(), h.header)
	if h.status == 0 {
		return false
	}
	w.WriteHeader(h.status)
	w.Write(h.body.Bytes())
	return true
}
