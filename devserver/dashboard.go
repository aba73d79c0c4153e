package devserver

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

type dashboardData struct {
	Title   string
	URL     string
	LAN     []string
	QR      template.HTML
	Clients int
	Reloads []ReloadRecord
	Status  Status
	Token   string
	Run     string
}

func (s *Server) status() Status {
	st := Status{Version: s.opts.Site.Current().Version}
	if s.opts.Status != nil {
		st = s.opts.Status()
	}
	if st.Versions == nil {
		st.Versions = []StatusVersion{}
	}
	if st.Peers == nil {
		st.Peers = []string{}
	}
	return st
}

// serveDashboard shows the site's URLs, versions, open pages and recent
// reloads with their save-to-paint times. The dat:// URL is the site's read
// capability, so the dashboard is for this machine only.
func (s *Server) serveDashboard(w http.ResponseWriter, r *http.Request) {
	if !isLoopback(r) {
		http.Error(w, "beaker-dev: the dashboard is only shown on the machine running beaker-dev", http.StatusForbidden)
		return
	}
	qrTarget := s.LocalURL()
	if len(s.opts.LAN) > 0 {
		qrTarget = s.opts.LAN[0]
	}
	d := dashboardData{
		Title: s.opts.Title, URL: s.opts.URL, LAN: s.opts.LAN, QR: qrSVG(qrTarget),
		Clients: s.Clients(), Reloads: s.hub.recentReloads(), Status: s.status(), Token: s.token, Run: s.run,
	}
	if d.Title == "" {
		d.Title = "Untitled site"
	}
	page, err := renderPage("dashboard", d)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(page)
}

// serveStatus is the dashboard's data as JSON.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if !isLoopback(r) {
		http.Error(w, "beaker-dev: the status API is only for the machine running beaker-dev", http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{
		"title": s.opts.Title, "url": s.opts.URL, "local": s.LocalURL(), "lan": s.opts.LAN,
		"clients": s.Clients(), "reloads": s.hub.recentReloads(), "status": s.status(),
	})
}

// qrSVG draws a QR code as inline SVG, one rect a dark module.
func qrSVG(text string) template.HTML {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return ""
	}
	q.DisableBorder = false
	bm := q.Bitmap()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges"><rect width="100%%" height="100%%" fill="#fff"/><path fill="#000" d="`, len(bm), len(bm))
	for y, row := range bm {
		for x, dark := range row {
			if dark {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String())
}
