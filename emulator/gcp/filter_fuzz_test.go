package gcp

import "testing"

// FuzzParseFilter: any filter either compiles or is refused; none panics,
// and a compiled one can be evaluated.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "plan=basic", `plan="a b" OR -state:active`, "(a=b", "NOT NOT (plan!=x AND (account=y))", `plan="\"`, "-", "()"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseFilter(s)
		if err == nil {
			m(&entitlement{Plan: "basic", State: StateActive, Account: "providers/p/accounts/a"})
		}
	})
}
