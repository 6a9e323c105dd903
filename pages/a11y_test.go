package pages_test

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// accessibilityProblems lists what a page lacks for a buyer on a phone, with
// a screen reader or a keyboard, and any resource it loads from elsewhere.
func accessibilityProblems(page string) []string {
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		return []string{"does not parse: " + err.Error()}
	}
	var probs []string
	attr := func(n *html.Node, k string) (string, bool) {
		for _, a := range n.Attr {
			if a.Key == k {
				return a.Val, true
			}
		}
		return "", false
	}
	var text func(n *html.Node) string
	text = func(n *html.Node) string {
		if n.Type == html.TextNode {
			return n.Data
		}
		var b strings.Builder
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			b.WriteString(text(c))
		}
		return b.String()
	}
	labelled := map[string]bool{} // ids named by <label for>
	var controls []*html.Node     // inputs that need a label
	insideLabel := map[*html.Node]bool{}
	h1, viewport, title := 0, false, false
	var walk func(n *html.Node, inLabel bool)
	walk = func(n *html.Node, inLabel bool) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "html":
				if l, _ := attr(n, "lang"); l == "" {
					probs = append(probs, "<html> has no lang")
				}
			case "meta":
				if v, _ := attr(n, "name"); v == "viewport" {
					viewport = true
				}
			case "title":
				title = strings.TrimSpace(text(n)) != ""
			case "h1":
				h1++
			case "label":
				if f, ok := attr(n, "for"); ok {
					labelled[f] = true
				}
				inLabel = true
			case "input", "select", "textarea":
				if t, _ := attr(n, "type"); t != "hidden" && t != "submit" && t != "button" {
					controls = append(controls, n)
					insideLabel[n] = inLabel
				}
			case "img":
				if _, ok := attr(n, "alt"); !ok {
					probs = append(probs, "an <img> without alt")
				}
			case "a", "button":
				if strings.TrimSpace(text(n)) == "" {
					if l, _ := attr(n, "aria-label"); l == "" {
						probs = append(probs, "a <"+n.Data+"> without text")
					}
				}
				if v, _ := attr(n, "tabindex"); strings.HasPrefix(v, "-") {
					probs = append(probs, "a <"+n.Data+"> out of the keyboard's reach (tabindex<0)")
				}
			}
			for _, k := range []string{"src", "href"} {
				v, _ := attr(n, k)
				if n.Data != "a" && (strings.HasPrefix(v, "http:") || strings.HasPrefix(v, "https:") || strings.HasPrefix(v, "//")) {
					probs = append(probs, fmt.Sprintf("<%s %s=%q> loads from elsewhere", n.Data, k, v))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inLabel)
		}
	}
	walk(doc, false)
	for _, c := range controls {
		id, _ := attr(c, "id")
		al, _ := attr(c, "aria-label")
		alb, _ := attr(c, "aria-labelledby")
		if !insideLabel[c] && !labelled[id] && al == "" && alb == "" {
			name, _ := attr(c, "name")
			probs = append(probs, fmt.Sprintf("<%s name=%q> has no label", c.Data, name))
		}
	}
	if h1 != 1 {
		probs = append(probs, fmt.Sprintf("%d <h1>, want 1", h1))
	}
	if !viewport {
		probs = append(probs, "no viewport meta (unreadable on a phone)")
	}
	if !title {
		probs = append(probs, "no <title>")
	}
	return probs
}

func checkAccessible(t *testing.T, page string) {
	t.Helper()
	for _, p := range accessibilityProblems(page) {
		t.Errorf("accessibility: %s", p)
	}
}

// The checker itself finds what it looks for.
func TestAccessibilityCheckerFindsProblems(t *testing.T) {
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
		probs := strings.Join(accessibilityProblems(tc.page), "; ")
		if !strings.Contains(probs, tc.want) {
			t.Errorf("%s: found %q, want %q", tc.page, probs, tc.want)
		}
	}
	ok := `<html lang="en"><head><meta name="viewport"><title>t</title></head><body><h1>x</h1><label>Email <input name="e"></label><input aria-label="Code" name="c"><input type="hidden" name="h"></body></html>`
	if probs := accessibilityProblems(ok); len(probs) > 0 {
		t.Errorf("a good page: %v", probs)
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
