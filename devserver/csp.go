package devserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// beakerCSP is the sandbox a page gets when its dat.json sets none. Beaker
// serves dat:// pages in a secure context: they may load from themselves,
// https:, wss:, data: and blob:, while plain http: and ws: to other hosts is
// blocked as mixed content. Inline code and eval are allowed, as in Beaker.
const beakerCSP = "default-src 'self' https: wss: data: blob: 'unsafe-inline' 'unsafe-eval'"

const reportPath = internalPrefix + "csp-report"

// setCSP sets the Content-Security-Policy of a page: dat.json's
// content_security_policy when it has one (as Beaker sends it), else the
// Beaker sandbox; either way reporting back to us.
func (s *Server) setCSP(h http.Header, m hyperdrive.SiteManifest) {
	policy := strings.TrimSpace(m.ContentSecurityPolicy)
	if policy == "" {
		policy = beakerCSP
	}
	if !strings.Contains(policy, "report-uri") {
		policy = strings.TrimRight(policy, "; ") + "; report-uri " + reportPath
	}
	h.Set("Content-Security-Policy", policy)
}

// violations remembers which violations were reported, so each is printed
// once.
type violations struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newViolations() *violations { return &violations{seen: map[string]bool{}} }

// report records a violation and returns it with advice, or false if it
// was reported already.
func (v *violations) report(e ViolationEvent) (ViolationEvent, bool) {
	e.Directive = strings.TrimSpace(e.Directive)
	blocked := e.Blocked
	if u, err := url.Parse(blocked); err == nil && u.Host != "" {
		blocked = u.Scheme + "://" + u.Host
	}
	key := e.Directive + " " + blocked
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen[key] || len(v.seen) > 1000 {
		return e, false
	}
	v.seen[key] = true
	e.Advice = advice(e)
	return e, true
}

// advice says, in one line, what a Beaker visitor would be blocked from.
func advice(e ViolationEvent) string {
	what := "this resource"
	d := e.Directive
	switch {
	case strings.HasPrefix(d, "script"):
		what = "this script"
	case strings.HasPrefix(d, "style"):
		what = "these styles"
	case strings.HasPrefix(d, "img"):
		what = "this image"
	case strings.HasPrefix(d, "font"):
		what = "this font"
	case strings.HasPrefix(d, "connect"):
		what = "this request (fetch, XHR or websocket)"
	case strings.HasPrefix(d, "media"):
		what = "this audio or video"
	case strings.HasPrefix(d, "frame"), strings.HasPrefix(d, "child"):
		what = "this frame"
	case strings.HasPrefix(d, "worker"):
		what = "this worker"
	}
	b := e.Blocked
	switch {
	case strings.HasPrefix(b, "http:"):
		return "Beaker visitors would not get " + what + ": dat:// sites are a secure context where plain http: is blocked; use https: or copy the file into the site"
	case strings.HasPrefix(b, "ws:"):
		return "Beaker visitors would not get " + what + ": use wss: instead of ws:"
	case b == "inline" || b == "eval" || b == "":
		return "Beaker visitors would not get " + what + " (" + b + "): the site's content_security_policy in dat.json forbids it"
	}
	return "Beaker visitors would not get " + what + ": the site's content_security_policy in dat.json forbids " + b
}

func (s *Server) violation(e ViolationEvent) {
	if e, ok := s.csp.report(e); ok {
		s.event(e)
	}
}

// serveCSPReport takes the browser's own reports (report-uri), both the
// legacy {"csp-report": {...}} form and the Reporting API's array form.
func (s *Server) serveCSPReport(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "bad report", http.StatusBadRequest)
		return
	}
	type legacy struct {
		Document  string `json:"document-uri"`
		Effective string `json:"effective-directive"`
		Violated  string `json:"violated-directive"`
		Blocked   string `json:"blocked-uri"`
		Source    string `json:"source-file"`
		Line      int    `json:"line-number"`
	}
	var one struct {
		Report legacy `json:"csp-report"`
	}
	var reports []legacy
	if json.Unmarshal(body, &one) == nil && (one.Report.Effective != "" || one.Report.Violated != "") {
		reports = append(reports, one.Report)
	} else {
		var many []struct {
			Body struct {
				Document  string `json:"documentURL"`
				Effective string `json:"effectiveDirective"`
				Blocked   string `json:"blockedURL"`
				Source    string `json:"sourceFile"`
				Line      int    `json:"lineNumber"`
			} `json:"body"`
		}
		if json.Unmarshal(body, &many) == nil {
			for _, m := range many {
				reports = append(reports, legacy{Document: m.Body.Document, Effective: m.Body.Effective, Blocked: m.Body.Blocked, Source: m.Body.Source, Line: m.Body.Line})
			}
		}
	}
	for _, rep := range reports {
		d := rep.Effective
		if d == "" {
			d = rep.Violated
		}
		page := rep.Document
		if u, err := url.Parse(page); err == nil {
			page = u.Path
		}
		s.violation(ViolationEvent{Directive: d, Blocked: rep.Blocked, Source: rep.Source, Line: rep.Line, Page: page})
	}
	w.WriteHeader(http.StatusNoContent)
}
