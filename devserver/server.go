// Package devserver is beaker-dev's HTTP side: it serves a site (a folder
// being edited, or any version of an archive) with Beaker's resolution
// rules, injects the live-reload client into pages, runs the hub that tells
// every open page to reload or swap styles, shows a dashboard, and advertises
// itself on the LAN by mDNS.
//
// A Server owns its http.Server and listener; Shutdown stops it and closes
// every websocket. It is safe to share between goroutines.
package devserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// Files is one view of a site's files.
type Files struct {
	FS        fs.FS
	Version   string // what a page served from it shows (an archive version, or a preview stamp)
	Immutable bool   // a fixed archive version: responses may be cached forever
}

// Site is what a Server serves. The serve command backs it with the site
// folder (as it would be published) and its archive; view backs it with a
// remote archive.
type Site interface {
	// Current returns the files served at plain paths.
	Current() Files
	// Checkout returns an archive version named by "+N" or "@TAG".
	Checkout(spec string) (Files, error)
}

// ErrVersion is what Checkout returns (wrapped) for versions that do not exist.
var ErrVersion = errors.New("devserver: no such version")

// ErrUnavailable is what a Site's files return (wrapped) from Open when the
// content exists but cannot be had now: a remote site's chunks that no
// connected peer sent. The page gets a 504 that says so and reloads when
// the content arrives.
var ErrUnavailable = errors.New("devserver: not downloaded yet")

// Options configure a Server.
type Options struct {
	Site Site
	// Addr is the listen address. A host of "" or "0.0.0.0" listens on every
	// interface (the LAN preview); "127.0.0.1" keeps it to this machine.
	Addr string
	// MDNSName is the NAME of NAME.local, accepted as a Host.
	MDNSName string
	// URL is the site's dat:// URL, shown on the dashboard to this machine only.
	URL string
	// Title names the site on the dashboard.
	Title string
	// LAN lists the URLs devices on the LAN can open, for the dashboard.
	LAN []string
	// Status feeds the dashboard's versions, tags and peers; may be nil.
	Status func() Status
	// Events receives what happens: paint times, CSP violations. May be nil.
	Events func(Event)
	// Logf logs unexpected server errors; nil discards them.
	Logf func(format string, args ...any)
}

// Server is a running dev server.
type Server struct {
	opts      Options
	token     string // secret: authorizes a page's websocket
	run       string // public: names this run, so pages notice a restart
	hub       *hub
	http      *http.Server
	ln        net.Listener
	hosts     *hostPolicy
	csp       *violations
	manifests manifests
}

// ErrPortInUse is returned (wrapped) by Listen when the port is taken.
var ErrPortInUse = errors.New("devserver: port in use")

// Listen binds the address and returns a Server ready to Serve.
func Listen(opts Options) (*Server, error) {
	if opts.Site == nil {
		return nil, errors.New("devserver: no site")
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: %s is taken by another program; choose another with --port, or stop that program", ErrPortInUse, opts.Addr)
		}
		return nil, err
	}
	tok := make([]byte, 24)
	rand.Read(tok)
	s := &Server{opts: opts, token: hex.EncodeToString(tok[:16]), run: hex.EncodeToString(tok[16:]), ln: ln}
	s.hosts = newHostPolicy(opts.MDNSName)
	s.csp = newViolations()
	s.hub = newHub(s)
	errLog := log.New(logWriter{opts.Logf}, "", 0)
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errLog,
	}
	// Shutdown does not wait for hijacked connections: close the sockets.
	s.http.RegisterOnShutdown(s.hub.close)
	return s, nil
}

type logWriter struct{ logf func(string, ...any) }

func (w logWriter) Write(p []byte) (int, error) {
	if w.logf != nil {
		w.logf("%s", p)
	}
	return len(p), nil
}

// Serve serves until Shutdown. It returns nil after a Shutdown.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Shutdown stops accepting requests, closes every websocket, and waits for
// requests in flight (until ctx is done).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.hub.wait()
	return err
}

// Addr returns the address the server listens on.
func (s *Server) Addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// Port returns the port the server listens on.
func (s *Server) Port() int { return s.Addr().Port }

// LocalURL returns http://127.0.0.1:PORT/ (or the loopback form of the
// listen address).
func (s *Server) LocalURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())) + "/"
}

// Clients returns how many pages are connected.
func (s *Server) Clients() int { return s.hub.count() }

func (s *Server) event(e Event) {
	if s.opts.Events != nil {
		s.opts.Events(e)
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}
