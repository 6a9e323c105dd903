package lifecycle

import (
	"errors"
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
