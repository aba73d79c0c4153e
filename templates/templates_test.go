package templates

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestScaffolds(t *testing.T) {
	names := Scaffolds()
	if len(names) < 2 {
		t.Fatalf("scaffolds = %v, want at least plain and blog", names)
	}
	for _, name := range names {
		files, err := Render(name, Data{Title: `Ann's "Site" <b>`, Year: 2026})
		if err != nil {
			t.Fatal(err)
		}
		byPath := map[string][]byte{}
		for _, f := range files {
			byPath[f.Path] = f.Content
		}
		var m map[string]any
		if err := json.Unmarshal(byPath["dat.json"], &m); err != nil || m["title"] != `Ann's "Site" <b>` {
			t.Fatalf("%s: dat.json = %s (%v)", name, byPath["dat.json"], err)
		}
		if !strings.Contains(string(byPath["index.html"]), "Ann&#39;s &#34;Site&#34; &lt;b&gt;") {
			t.Fatalf("%s: title not escaped in index.html:\n%s", name, byPath["index.html"])
		}
	}
	if _, err := Render("nope", Data{}); !errors.Is(err, ErrNoScaffold) {
		t.Fatalf("Render(nope) = %v", err)
	}
}
