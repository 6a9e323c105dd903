package lifecycle

import (
	"errors"
	"fmt"
	"io"
	"net/http"
)

// BodyStatus is the status a cloud adapter's handler (notification,
// landing, sign-up) answers when reading its request body failed: 413
// Request Entity Too Large when the body was over the limit that
// http.MaxBytesReader put on it, so that the sender knows a retry of the
// same body cannot succeed for another reason than its size, and 400 for
// any other unreadable body. It is the one place the three adapters map a
// body error to a status, so that they answer alike (as POST /v1/usage
// does).
func BodyStatus(err error) int {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// ReadBody reads a cloud notification's body of at most limit bytes. When
// it cannot, it answers itself, in plain text, with BodyStatus's status,
// and returns false.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		http.Error(w, fmt.Sprintf("unreadable body (at most %d bytes): %v", limit, err), BodyStatus(err))
		return nil, false
	}
	return body, true
}
