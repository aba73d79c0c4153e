package devserver

import (
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The live-reload protocol: JSON text messages over one websocket per tab at
// /.beaker-dev/ws?token=TOKEN, where TOKEN is this run's secret, delivered in
// the page's script tag. Server → client:
//
//	{"type":"welcome","version":V}               on connect: the version now served
//	{"type":"update","id":N,"version":V,"changes":[{"path":P,"kind":K}]}
//	                                              K is css, image, page or other
//	{"type":"ping","t":T}                         every pingInterval; answered with pong
//	{"type":"error","title":S,"message":S}        show the overlay (a failed publish)
//	{"type":"clear"}                              hide it
//
// Client → server:
//
//	{"type":"hello","version":V,"file":F,"path":P,"fixed":B}
//	{"type":"painted","id":N,"ms":M}   M: from receiving update N to its paint
//	{"type":"pong","t":T}
//	{"type":"violation","directive":D,"blocked":U,"source":S,"line":L,"page":P}
const (
	pingInterval = 5 * time.Second
	writeTimeout = 10 * time.Second
	readLimit    = 64 << 10
	clientQueue  = 64
	keptUpdates  = 256
	keptReloads  = 20
)

type hub struct {
	s        *Server
	upgrader websocket.Upgrader

	mu      sync.Mutex
	clients map[*conn]struct{}
	closed  bool
	nextID  uint64
	sent    map[uint64]*sentUpdate
	reloads []*ReloadRecord // recent broadcasts, newest last, for the dashboard
	wg      sync.WaitGroup
}

type sentUpdate struct {
	at      time.Time
	saved   time.Time
	swap    bool
	version string
	record  *ReloadRecord
}

// conn is one page's socket. Its reader and writer goroutines belong to the
// hub (counted in hub.wg) and stop when done is closed or the socket fails.
type conn struct {
	ws     *websocket.Conn
	out    chan []byte
	done   chan struct{}
	once   sync.Once
	device string
	local  bool

	mu    sync.Mutex
	path  string
	fixed bool
	rtt   time.Duration
}

func newHub(s *Server) *hub {
	h := &hub{s: s, clients: map[*conn]struct{}{}, sent: map[uint64]*sentUpdate{}}
	h.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		CheckOrigin:     sameOrigin,
	}
	return h
}

// serveWS upgrades a page's connection after checking that it comes from a
// page this server served (same Origin) and carries this run's token.
func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if subtle.ConstantTimeCompare([]byte(tok), []byte(h.s.token)) != 1 {
		http.Error(w, "beaker-dev: bad token: reload the page", http.StatusForbidden)
		return
	}
	if !sameOrigin(r) {
		http.Error(w, "beaker-dev: websocket from another origin refused", http.StatusForbidden)
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	ws.SetReadLimit(readLimit)
	c := &conn{ws: ws, out: make(chan []byte, clientQueue), done: make(chan struct{}), local: isLoopback(r)}
	c.device = deviceName(r.UserAgent(), r.RemoteAddr, c.local)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ws.Close()
		return
	}
	h.clients[c] = struct{}{}
	n := len(h.clients)
	h.wg.Add(2)
	h.mu.Unlock()
	go h.writer(c)
	go h.reader(c)
	c.send(mustJSON(map[string]any{"type": "welcome", "version": h.s.opts.Site.Current().Version}))
	h.s.event(ClientEvent{Connected: true, Device: c.device, Clients: n})
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// send queues a message; a client too slow to keep up is dropped (its page
// reconnects and catches up by version).
func (c *conn) send(b []byte) {
	select {
	case c.out <- b:
	case <-c.done:
	default:
		c.stop()
	}
}

func (c *conn) stop() { c.once.Do(func() { close(c.done) }) }

func (h *hub) writer(c *conn) {
	defer h.wg.Done()
	defer c.ws.Close()
	tick := time.NewTicker(pingInterval)
	defer tick.Stop()
	write := func(b []byte) error {
		c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		return c.ws.WriteMessage(websocket.TextMessage, b)
	}
	ping := func() error {
		return write(mustJSON(map[string]any{"type": "ping", "t": time.Now().UnixNano()}))
	}
	if ping() != nil {
		c.stop()
		return
	}
	for {
		select {
		case b := <-c.out:
			if write(b) != nil {
				c.stop()
				return
			}
		case <-tick.C:
			if ping() != nil {
				c.stop()
				return
			}
		case <-c.done:
			c.ws.SetWriteDeadline(time.Now().Add(time.Second))
			c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server stopping"))
			return
		}
	}
}

type clientMsg struct {
	Type      string  `json:"type"`
	Version   string  `json:"version"`
	File      string  `json:"file"`
	Path      string  `json:"path"`
	Fixed     bool    `json:"fixed"`
	ID        uint64  `json:"id"`
	MS        float64 `json:"ms"`
	T         int64   `json:"t"`
	Directive string  `json:"directive"`
	Blocked   string  `json:"blocked"`
	Source    string  `json:"source"`
	Line      int     `json:"line"`
	Page      string  `json:"page"`
}

func (h *hub) reader(c *conn) {
	defer h.wg.Done()
	defer func() {
		c.stop()
		h.mu.Lock()
		delete(h.clients, c)
		n := len(h.clients)
		closed := h.closed
		h.mu.Unlock()
		if !closed {
			h.s.event(ClientEvent{Connected: false, Device: c.device, Path: c.path, Clients: n})
		}
	}()
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		var m clientMsg
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		switch m.Type {
		case "hello":
			c.mu.Lock()
			c.path, c.fixed = m.Path, m.Fixed
			c.mu.Unlock()
		case "pong":
			if m.T > 0 {
				c.mu.Lock()
				c.rtt = time.Since(time.Unix(0, m.T))
				c.mu.Unlock()
			}
		case "painted":
			h.painted(c, m.ID, m.MS)
		case "violation":
			h.s.violation(ViolationEvent{Directive: m.Directive, Blocked: m.Blocked, Source: m.Source, Line: m.Line, Page: m.Page})
		}
	}
}

// painted turns a page's report into a save-to-paint time: the server's
// share (save → broadcast), plus half the socket's round trip, plus the
// page's share (update received → new content painted, by its own clock).
func (h *hub) painted(c *conn, id uint64, ms float64) {
	h.mu.Lock()
	u := h.sent[id]
	h.mu.Unlock()
	if u == nil || ms < 0 || ms > 600_000 {
		return
	}
	c.mu.Lock()
	rtt, p := c.rtt, c.path
	c.mu.Unlock()
	start := u.saved
	if start.IsZero() {
		start = u.at
	}
	total := u.at.Sub(start) + rtt/2 + time.Duration(ms*float64(time.Millisecond))
	h.mu.Lock()
	if u.record != nil {
		u.record.Paints = append(u.record.Paints, PaintRecordLog{Device: c.device, MS: float64(total.Microseconds()) / 1000, Swap: u.swap})
	}
	h.mu.Unlock()
	h.s.event(PaintEvent{Device: c.device, Local: c.local, Path: p, Version: u.version, Swap: u.swap, SaveToPaint: total})
}

// RemotePaint records a paint that a remote viewer reported through the
// swarm (its time measured by the caller) with the broadcast of the same
// version, for the dashboard, and passes it on as an event.
func (s *Server) RemotePaint(e PaintEvent) {
	e.Remote, e.Local = true, false
	h := s.hub
	h.mu.Lock()
	for i := len(h.reloads) - 1; i >= 0; i-- {
		if r := h.reloads[i]; r.Version == e.Version {
			r.Paints = append(r.Paints, PaintRecordLog{Device: e.Device, MS: float64(e.SaveToPaint.Microseconds()) / 1000, Swap: e.Swap, Remote: true})
			break
		}
	}
	h.mu.Unlock()
	s.event(e)
}

// changeKind classifies a changed path for the client: stylesheets and
// images are swapped in place, a page reloads only the tabs showing it,
// anything else (scripts, data, dat.json) reloads every page.
func changeKind(p string) string {
	switch strings.ToLower(path.Ext(p)) {
	case ".css":
		return "css"
	case ".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg", ".ico", ".bmp":
		return "image"
	case ".html", ".htm", ".md":
		if path.Base(p) == "index.md" || !strings.HasSuffix(p, ".md") {
			return "page"
		}
	}
	return "other"
}

// Broadcast sends an update to every open page and returns how many got it.
func (s *Server) Broadcast(u Update) int {
	h := s.hub
	type change struct {
		Path string `json:"path"`
		Kind string `json:"kind"`
	}
	changes := make([]change, 0, len(u.Paths))
	swap := true
	for _, p := range u.Paths {
		k := changeKind(p)
		changes = append(changes, change{Path: p, Kind: k})
		if k != "css" && k != "image" {
			swap = false
		}
	}
	now := time.Now()
	rec := &ReloadRecord{Version: u.Version, Paths: u.Paths, At: now}
	h.mu.Lock()
	h.nextID++
	id := h.nextID
	h.sent[id] = &sentUpdate{at: now, saved: u.SavedAt, swap: swap, version: u.Version, record: rec}
	delete(h.sent, id-keptUpdates)
	msg := mustJSON(map[string]any{"type": "update", "id": id, "version": u.Version, "changes": changes})
	n := 0
	for c := range h.clients {
		c.mu.Lock()
		fixed := c.fixed
		c.mu.Unlock()
		if !fixed {
			c.send(msg)
			n++
		}
	}
	rec.Clients = n
	h.reloads = append(h.reloads, rec)
	if len(h.reloads) > keptReloads {
		h.reloads = h.reloads[1:]
	}
	h.mu.Unlock()
	return n
}

// recentReloads copies the recent broadcasts, newest first.
func (h *hub) recentReloads() []ReloadRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ReloadRecord, 0, len(h.reloads))
	for i := len(h.reloads) - 1; i >= 0; i-- {
		r := *h.reloads[i]
		r.Paints = append([]PaintRecordLog(nil), r.Paints...)
		out = append(out, r)
	}
	return out
}

// Fail shows an overlay on every open page, e.g. when publishing failed.
func (s *Server) Fail(title, message string) {
	s.hub.sendAll(mustJSON(map[string]any{"type": "error", "title": title, "message": message}))
}

// Clear hides the overlay.
func (s *Server) Clear() { s.hub.sendAll(mustJSON(map[string]any{"type": "clear"})) }

func (h *hub) sendAll(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		c.send(b)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// close tells every page the server is going away and closes its socket.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	for c := range h.clients {
		c.stop()
	}
	h.mu.Unlock()
}

// wait waits for every connection's goroutines to stop.
func (h *hub) wait() { h.wg.Wait() }

var (
	browserRE = regexp.MustCompile(`(Edg|OPR|Firefox|FxiOS|CriOS|Chrome|Version)/(\d+)`)
	osNames   = []struct{ needle, name string }{
		{"Android", "Android"}, {"iPhone", "iPhone"}, {"iPad", "iPad"}, {"CrOS", "ChromeOS"},
		{"Mac OS X", "macOS"}, {"Windows", "Windows"}, {"Linux", "Linux"},
	}
)

// deviceName names a page's browser for the terminal: "Chrome 140 on
// Android (192.168.1.7)".
func deviceName(ua, remote string, local bool) string {
	browser := "browser"
	if m := browserRE.FindAllStringSubmatch(ua, -1); len(m) > 0 {
		// The last match is the most specific (Edg after Chrome, Version for Safari).
		best := m[len(m)-1]
		for _, x := range m {
			if x[1] == "Edg" || x[1] == "OPR" || x[1] == "Firefox" || x[1] == "FxiOS" || x[1] == "CriOS" {
				best = x
			}
		}
		name := map[string]string{"Edg": "Edge", "OPR": "Opera", "FxiOS": "Firefox", "CriOS": "Chrome", "Version": "Safari"}[best[1]]
		if name == "" {
			name = best[1]
		}
		browser = name + " " + best[2]
		if strings.Contains(ua, "HeadlessChrome") {
			browser = "Headless " + browser
		}
	}
	osName := ""
	for _, o := range osNames {
		if strings.Contains(ua, o.needle) {
			osName = " on " + o.name
			break
		}
	}
	where := "this machine"
	if !local {
		if host, _, err := net.SplitHostPort(remote); err == nil {
			where = host
		}
	}
	return browser + osName + " (" + where + ")"
}
