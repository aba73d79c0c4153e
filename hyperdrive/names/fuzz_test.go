package names

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The cache file comes from disk: any bytes must decode to an error or to
// entries that survive a round trip unchanged.
func FuzzDecodeCache(f *testing.F) {
	f.Add([]byte(`{"version":1,"names":{"a.test":{"key":"` + keyA.String() + `","source":"dns","fetched":"2026-01-02T03:04:05Z","ttl":60}}}`))
	f.Add([]byte(`{"version":1,"names":{"a.test":{"key":"` + keyA.String() + `","source":"https","fetched":"2026-01-02T03:04:05+02:00","ttl":604800}}}`))
	f.Add([]byte(`{"version":1,"names":null}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte("\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeCache(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		again, err := decodeCache(encodeCache(m))
		if err != nil {
			t.Fatalf("re-encoded cache does not decode: %v", err)
		}
		if len(again) != len(m) {
			t.Fatalf("%d entries, then %d", len(m), len(again))
		}
		for name, e := range m {
			if a := again[name]; a.Key != e.Key || a.Source != e.Source || !a.Fetched.Equal(e.Fetched) || a.TTL != e.TTL {
				t.Fatalf("%s: %+v, then %+v", name, e, a)
			}
			if e.TTL < MinTTL || e.TTL > MaxTTL {
				t.Fatalf("%s: TTL %v out of bounds", name, e.TTL)
			}
		}
	})
}

// /.well-known/dat comes from the network.
func FuzzParseWellKnown(f *testing.F) {
	f.Add([]byte("dat://" + keyA.String() + "\nTTL=3600\n"))
	f.Add([]byte("dat://" + keyA.String() + "/\r\nttl=99999999999999999999\r\n"))
	f.Add([]byte("\xef\xbb\xbfDAT://" + keyA.String()))
	f.Add([]byte("<html>"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, ttl, err := ParseWellKnown(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		if ttl < -1 || ttl > MaxTTL {
			t.Fatalf("TTL %v", ttl)
		}
		if !strings.Contains(strings.ToLower(string(b)), k.String()) {
			t.Fatalf("key %s is not in the file", k)
		}
		if c := clampTTL(ttl); c < MinTTL || c > MaxTTL {
			t.Fatalf("clamped TTL %v", c)
		}
	})
}

// DNS answers come from the network.
func FuzzParseTXT(f *testing.F) {
	for _, strs := range [][]string{{"datkey=" + keyA.String()}, {"datkey=" + keyA.String()[:20], keyA.String()[20:]}, {`"datkey=x"`}, {"v=spf1"}} {
		m := new(dns.Msg)
		m.SetQuestion("a.test.", dns.TypeTXT)
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: "a.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: strs})
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		a, err := parseTXT("a.test", "127.0.0.1:53", m)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
			return
		}
		if a.source != SourceDNS || a.ttl < 0 || a.ttl > time.Duration(1<<32)*time.Second {
			t.Fatalf("answer %+v", a)
		}
	})
}
