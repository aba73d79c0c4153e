package hyperdrive

import (
	"errors"
	"testing"
)

func TestParseURL(t *testing.T) {
	key := "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664"
	for _, tc := range []struct{ in, host, version, path string }{
		{"dat://" + key + "/", key, "", "/"},
		{key, key, "", "/"},
		{"dat://" + key, key, "", "/"},
		{"dat://" + key + "+42/a/b.html", key, "+42", "/a/b.html"},
		{"dat://" + key + "@2.1.0/", key, "@2.1.0", "/"},
		{"dat://" + key + "+latest", key, "+latest", "/"},
		{"dat://Example.COM/x", "example.com", "", "/x"},
		{"hyper://" + key + "/", key, "", "/"},
	} {
		u, err := ParseURL(tc.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.in, err)
			continue
		}
		if u.Host != tc.host || u.Version != tc.version || u.Path != tc.path {
			t.Errorf("ParseURL(%q) = %+v", tc.in, u)
		}
	}
	for _, bad := range []string{"http://" + key, "dat://abc", "dat://" + key + "+/", "dat://-x-/", "", "dat://a b/"} {
		if _, err := ParseURL(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("ParseURL(%q) = %v, want ErrBadURL", bad, err)
		}
	}
}
