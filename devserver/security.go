package devserver

import (
	"net"
	"net/http"
	"os"
	"strings"
)

// hostPolicy is the Host allowlist that defeats DNS rebinding: a page on an
// attacker's domain that re-resolves to 127.0.0.1 or to this machine's LAN
// address still sends its own domain as Host, and is refused. Allowed:
// loopback names (localhost, *.localhost), IP literals (what LAN URLs and QR
// codes use), our mDNS name and this machine's host name.
type hostPolicy struct {
	names map[string]bool
}

func newHostPolicy(mdnsName string) *hostPolicy {
	p := &hostPolicy{names: map[string]bool{"localhost": true}}
	if mdnsName != "" {
		p.names[strings.ToLower(mdnsName)+".local"] = true
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		p.names[h] = true
		p.names[h+".local"] = true
	}
	return p
}

func (p *hostPolicy) allowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	return p.names[host] || strings.HasSuffix(host, ".localhost")
}

// isLoopback reports whether the request comes from this machine.
func isLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// guard applies the rules every request meets before any handler:
//   - the Host allowlist (403 otherwise, naming the URL to use);
//   - devices on the LAN may only read (GET and HEAD);
//   - no cross-site no-cors loads (another site's <script src> or <img> of
//     our files, the webpack-dev-server CVE-2025-30359 pattern), and a
//     same-origin resource policy on every response;
//   - no CORS headers are ever sent, so other origins cannot read responses.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !s.hosts.allowed(r.Host) {
			http.Error(w, "beaker-dev: Host "+r.Host+" is not allowed (DNS rebinding protection); open "+s.LocalURL()+" or a LAN address instead", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !isLoopback(r) {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "beaker-dev: devices on the LAN can only read the preview", http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" && r.Header.Get("Sec-Fetch-Mode") == "no-cors" {
			http.Error(w, "beaker-dev: cross-site loads of the preview are refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin checks a websocket handshake's Origin against the Host it was
// sent to: only pages served by this server may connect.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	o := strings.TrimPrefix(strings.TrimPrefix(origin, "http://"), "https://")
	return o != origin && strings.EqualFold(o, r.Host)
}
