package publish

import "testing"

func TestIgnore(t *testing.T) {
	ig := NewIgnore()
	ig.Add("", []byte("# build output\ndist/\n!dist/keep.js\n*.log\n!keep.log\n!.htaccess\n"))
	ig.Add("docs", []byte("drafts/\n"))
	for _, tc := range []struct {
		path   string
		dir    bool
		ignore bool
	}{
		{"index.html", false, false},
		{".git", true, true},
		{"sub/.git/config", false, true},
		{".dat/archive.json", false, true},
		{"node_modules", true, true},
		{"node_modules/x/index.js", false, true},
		{".env", false, true},
		{".DS_Store", false, true},
		{"css/.hidden.css", false, true},
		{".well-known", true, false},
		{".well-known/dat", false, false},
		{".htaccess", false, false},
		{"index.html~", false, true},
		{".index.html.swp", false, true},
		{"4913", false, true},
		{"index.html___jb_tmp___", false, true},
		{"dist", true, true},
		{"dist/app.js", false, true},
		{"error.log", false, true},
		{"keep.log", false, false},
		{"docs/drafts/a.md", false, true},
		{"drafts/a.md", false, false},
		{".datignore", false, true},
		{"dist/keep.js", false, true}, // a parent folder is ignored: no re-including below it
	} {
		if got := ig.Match(tc.path, tc.dir); got != tc.ignore {
			t.Errorf("Match(%q, dir=%v) = %v, want %v", tc.path, tc.dir, got, tc.ignore)
		}
	}
}
