// Package a11ytest checks an HTML page for what a buyer or a seller on a
// phone, with a screen reader or with only a keyboard needs, and for
// resources loaded from other sites. Tests use it on rendered pages and on
// the live DOM a browser test reads.
package a11ytest

import (
	"fmt"
	"strings"

	"golang.org/x/net/html"
)

// Problems lists what a page lacks for a buyer on a phone, with
// a screen reader or a keyboard, and any resource it loads from elsewhere.
func Problems(page string) []string {
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
