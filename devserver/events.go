package devserver

import "time"

// Event is something a Server reports to its owner (Options.Events): one
// of PaintEvent, ViolationEvent or ClientEvent.
type Event interface{ isEvent() }

// PaintEvent reports how long a save took to reach one device's screen.
type PaintEvent struct {
	Device      string        // "Chrome 140 on Android (192.168.1.7)"
	Local       bool          // the device is this machine
	Remote      bool          // a viewer's device, reported through the swarm
	Path        string        // the page
	Version     string        // the version it now shows
	Swap        bool          // styles or images swapped in place, no reload
	SaveToPaint time.Duration // from the save to the new content on screen
}

// ViolationEvent is a Content-Security-Policy violation a page hit, reported
// once per directive and blocked resource: what a Beaker user would be
// blocked from.
type ViolationEvent struct {
	Directive string // e.g. "script-src-elem"
	Blocked   string // the URL (or "inline", "eval") that was blocked
	Source    string // where in the page
	Line      int
	Page      string
	Advice    string // one line saying what a Beaker visitor would lose and how to fix it
}

// ClientEvent reports a page connecting or leaving.
type ClientEvent struct {
	Connected bool
	Device    string
	Path      string
	Clients   int // connected pages after the change
}

func (PaintEvent) isEvent()     {}
func (ViolationEvent) isEvent() {}
func (ClientEvent) isEvent()    {}

// Update tells every open page what a new version changed.
type Update struct {
	Version string
	Paths   []string  // archive paths put or deleted, e.g. "/css/site.css"
	SavedAt time.Time // when the save happened, for save-to-paint times; zero if unknown
}

// ReloadRecord is one broadcast, for the dashboard.
type ReloadRecord struct {
	Version string           `json:"version"`
	Paths   []string         `json:"paths"`
	Clients int              `json:"clients"`
	At      time.Time        `json:"at"`
	Paints  []PaintRecordLog `json:"paints"`
}

// PaintRecordLog is one device's paint of a broadcast.
type PaintRecordLog struct {
	Device string  `json:"device"`
	MS     float64 `json:"ms"`
	Swap   bool    `json:"swap"`
	Remote bool    `json:"remote,omitempty"` // a viewer's device, through the swarm
}

// Status is what the dashboard shows about the archive.
type Status struct {
	Version  string          `json:"version"`
	Versions []StatusVersion `json:"versions"` // newest first
	Peers    []string        `json:"peers"`
}

// StatusVersion is one version for the dashboard.
type StatusVersion struct {
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	Changes int       `json:"changes"`
	Tags    []string  `json:"tags"`
}
