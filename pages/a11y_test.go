package pages_test

import (
	"math"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/saasmarket/marketplace/internal/a11ytest"
)

func checkAccessible(t *testing.T, page string) {
	t.Helper()
	for _, p := range a11ytest.Problems(page) {
		t.Errorf("accessibility: %s", p)
	}
}

// The default layout's colours are readable: text and links at least 7:1
// against the white page (WCAG AAA), white button text at least 4.5:1 on
// the accent.
func TestContrast(t *testing.T) {
	b, err := os.ReadFile("templates/layout.html")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, m := range regexp.MustCompile(`--([a-z]+): (#[0-9a-f]{6})`).FindAllStringSubmatch(string(b), -1) {
		vars[m[1]] = m[2]
	}
	for _, name := range []string{"ink", "muted", "accent", "bad", "good"} {
		c, ok := vars[name]
		if !ok {
			t.Fatalf("layout.html has no --%s colour", name)
		}
		if r := contrast(c, "#ffffff"); r < 7 {
			t.Errorf("--%s %s on white: %.2f:1, want at least 7:1", name, c, r)
		}
	}
	if r := contrast("#ffffff", vars["accent"]); r < 4.5 {
		t.Errorf("white on --accent: %.2f:1", r)
	}
	if r := contrast("#777777", "#ffffff"); r >= 7 {
		t.Errorf("contrast(#777, white) = %.2f: the check cannot fail", r)
	}
}

func contrast(a, b string) float64 {
	la, lb := luminance(a), luminance(b)
	return (math.Max(la, lb) + 0.05) / (math.Min(la, lb) + 0.05)
}

func luminance(hex string) float64 {
	var l float64
	for i, w := range []float64{0.2126, 0.7152, 0.0722} {
		v, _ := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
		c := float64(v) / 255
		if c <= 0.03928 {
			c /= 12.92
		} else {
			c = math.Pow((c+0.055)/1.055, 2.4)
		}
		l += w * c
	}
	return l
}
