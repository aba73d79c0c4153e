package inject

import (
	"bytes"
	"strings"
	"testing"
)

var script = Script{Src: "/.beaker-dev/client.js", Data: map[string]string{"token": "t0k", "version": "7"}}

const tag = `<script src="/.beaker-dev/client.js" data-token="t0k" data-version="7" defer></script>`

func TestInto(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"head", "<!doctype html><html><head><title>x</title></head><body>hi</body></html>",
			"<!doctype html><html><head>" + tag + "<title>x</title></head><body>hi</body></html>", true},
		{"head with attributes, upper case", "<!DOCTYPE html>\n<HTML lang=en>\n<HEAD profile=\"a>b\">\n<meta charset=utf-8>",
			"<!DOCTYPE html>\n<HTML lang=en>\n<HEAD profile=\"a>b\">" + tag + "\n<meta charset=utf-8>", true},
		{"comments first", "<!-- <head> in a comment --><html><head></head></html>",
			"<!-- <head> in a comment --><html><head>" + tag + "</head></html>", true},
		{"no head", "<!doctype html><html><title>x</title><body>y", "<!doctype html><html>" + tag + "<title>x</title><body>y", true},
		{"no html", "<!doctype html><title>x</title><p>y", "<!doctype html>" + tag + "<title>x</title><p>y", true},
		{"only body", "<body><p>y</p></body>", tag + "<body><p>y</p></body>", true},
		{"byte order mark", "\xef\xbb\xbf<!doctype html><head></head>", "\xef\xbb\xbf<!doctype html><head>" + tag + "</head>", true},
		{"fragment", "<div class=card><p>partial</p></div>", "<div class=card><p>partial</p></div>", false},
		{"text fragment", "just text", "just text", false},
		{"empty", "", "", false},
		{"head in a script string is not the head", "<!doctype html><script>var s='<head>'</script><head></head>",
			"<!doctype html>" + tag + "<script>var s='<head>'</script><head></head>", true},
	} {
		got, ok := Into([]byte(tc.in), script)
		if string(got) != tc.want || ok != tc.ok {
			t.Errorf("%s:\n got  %q %v\n want %q %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNonceIsCopied(t *testing.T) {
	doc := `<!doctype html><html><head><script nonce="abc123">inline()</script></head></html>`
	got, ok := Into([]byte(doc), script)
	if !ok || !strings.Contains(string(got), `data-version="7" nonce="abc123" defer>`) {
		t.Fatalf("nonce not copied: %s", got)
	}
	withHeader := script
	withHeader.Nonce = "fromheader"
	got, _ = Into([]byte(doc), withHeader)
	if !strings.Contains(string(got), `nonce="fromheader"`) {
		t.Fatalf("header nonce not used: %s", got)
	}
	if Nonce([]byte(`<p nonce="x">`)) != "" {
		t.Fatal("a nonce on a <p> is not a CSP nonce")
	}
}

func TestAttributesAreEscaped(t *testing.T) {
	s := Script{Src: `/c.js?a=1&b="2"`, Data: map[string]string{"x": `"><script>alert(1)</script>`}}
	got := string(s.Tag(""))
	if strings.Contains(got, `"><script>alert`) || !strings.Contains(got, "&amp;b=&#34;2&#34;") {
		t.Fatalf("not escaped: %s", got)
	}
}

func FuzzInto(f *testing.F) {
	f.Add([]byte("<!doctype html><html><head></head><body></body></html>"))
	f.Add([]byte("<div>fragment</div>"))
	f.Add([]byte("\xef\xbb\xbf<!-- c --><HTML><HeAd x='>'>"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, ok := Into(doc, script)
		if !ok {
			if !bytes.Equal(out, doc) {
				t.Fatal("a fragment was changed")
			}
			return
		}
		i := bytes.Index(out, []byte(tag))
		if i < 0 || len(out) != len(doc)+len(tag) {
			t.Fatalf("tag not inserted whole: %q", out)
		}
		// Removing the tag gives the document back, byte for byte.
		if !bytes.Equal(append(append([]byte{}, out[:i]...), out[i+len(tag):]...), doc) {
			t.Fatal("document bytes changed")
		}
	})
}
