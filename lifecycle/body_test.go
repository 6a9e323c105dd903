package lifecycle_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/saasmarket/marketplace/lifecycle"
)

func TestBodyStatus(t *testing.T) {
	// readErr reads body through http.MaxBytesReader with limit, as the
	// handlers do, and returns the error the read gave.
	readErr := func(body string, limit int64) error {
		r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/", strings.NewReader(body))
		_, err := io.ReadAll(http.MaxBytesReader(httptest.NewRecorder(), r.Body, limit))
		return err
	}
	over := readErr("0123456789", 4)
	if over == nil {
		t.Fatal("a 10-byte body read with a 4-byte limit gave no error")
	}
	// A form parsed from a limited body reports the same error.
	form := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/", strings.NewReader("a="+strings.Repeat("b", 100)))
	form.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	form.Body = http.MaxBytesReader(httptest.NewRecorder(), form.Body, 16)
	formErr := form.ParseForm()
	if formErr == nil {
		t.Fatal("a 102-byte form parsed with a 16-byte limit gave no error")
	}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"over the limit", over, http.StatusRequestEntityTooLarge},
		{"over the limit, wrapped", fmt.Errorf("aws: read notification: %w", over), http.StatusRequestEntityTooLarge},
		{"form over the limit", formErr, http.StatusRequestEntityTooLarge},
		{"cut short", io.ErrUnexpectedEOF, http.StatusBadRequest},
		{"other", errors.New("connection reset"), http.StatusBadRequest},
		{"a different limit message", errors.New("http: request body too large"), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lifecycle.BodyStatus(tc.err); got != tc.want {
				t.Errorf("BodyStatus(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}
