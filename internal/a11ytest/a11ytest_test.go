package a11ytest

import (
	"strings"
	"testing"
)

// The checker itself finds what it looks for.
func TestProblems(t *testing.T) {
	for _, tc := range []struct{ page, want string }{
		{`<html><head><meta name="viewport"><title>t</title></head><body><h1>x</h1></body></html>`, "no lang"},
		{`<html lang="en"><head><title>t</title></head><body><h1>x</h1></body></html>`, "viewport"},
		{`<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><input name="email"></body></html>`, `name="email"> has no label`},
		{`<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><label for="a">A</label><input id="b" name="b"></body></html>`, "has no label"},
		{`<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><h1>y</h1></body></html>`, "2 <h1>"},
		{`<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><img src="a.png"></body></html>`, "without alt"},
		{`<html lang="en"><head><meta name="viewport"><title>t</title><script src="https://cdn.example/x.js"></script></head><body><h1>x</h1></body></html>`, "loads from elsewhere"},
		{`<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><a href="/x"></a></body></html>`, "without text"},
	} {
		probs := strings.Join(Problems(tc.page), "; ")
		if !strings.Contains(probs, tc.want) {
			t.Errorf("%s: found %q, want %q", tc.page, probs, tc.want)
		}
	}
	ok := `<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><label>Email <input name="e"></label><input aria-label="Code" name="c"><input type="hidden" name="h"></body></html>`
	if probs := Problems(ok); len(probs) > 0 {
		t.Errorf("a good page: %v", probs)
	}
}
