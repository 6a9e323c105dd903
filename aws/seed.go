package aws

// What the seed API shares: telling a refused call (nothing was applied)
// from one whose outcome is unknown (AWS may have applied it; such errors
// wrap marketplace.ErrOutcomeUnknown). Resending the identical record is
// safe, since AWS answers it with the same outcome; sending its usage again
// in another record is not.

import (
	"errors"

	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/saasmarket/marketplace"
)

// refused reports whether err says for certain that nothing was applied:
// the input was invalid (nothing was sent) or AWS answered with a client
// error. Everything else, including errors of a MeteringAPI this package
// does not know, may have been applied.
func refused(err error) bool {
	if err == nil || errors.Is(err, marketplace.ErrOutcomeUnknown) {
		return false
	}
	if errors.Is(err, ErrInvalidInput) {
		return true
	}
	var ae *APIError
	if !errors.As(err, &ae) || errors.Is(err, ErrInternalServiceError) {
		return false
	}
	var re *smithyhttp.ResponseError
	return !errors.As(err, &re) || re.HTTPStatusCode() < 500
}
