package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/beaker-dev/beaker-dev/devserver"
	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// frontOptions are the HTTP flags serve and view share.
type frontOptions struct {
	port     int
	noLAN    bool
	noMDNS   bool
	mdnsName string
}

// front is the HTTP side of serve and view: the dev server, listening on
// this machine or the LAN, and its mDNS advertisement.
type front struct {
	srv      *devserver.Server
	adv      *devserver.Advertiser
	lan      []devserver.LANAddr
	mdnsHost string
	served   chan error
}

// startFront listens and serves opts.Site; opts.Addr, MDNSName and LAN are
// filled in from o.
func startFront(out *printer, o frontOptions, opts devserver.Options) (*front, error) {
	f := &front{served: make(chan error, 1)}
	mdnsName := o.mdnsName
	if mdnsName == "" {
		mdnsName = devserver.MDNSName(opts.Title)
	}
	host := ""
	if o.noLAN {
		host = "127.0.0.1"
	}
	if !o.noLAN {
		var err error
		if f.lan, err = devserver.LANAddrs(); err != nil {
			out.warn("cannot list LAN addresses: %v", err)
		}
	}
	opts.Addr = net.JoinHostPort(host, strconv.Itoa(o.port))
	opts.MDNSName = mdnsName
	opts.LAN = lanURLs(f.lan, o.port)
	srv, err := devserver.Listen(opts)
	if err != nil {
		if errors.Is(err, devserver.ErrPortInUse) {
			return nil, &userError{code: exitInvalid, msg: clean(err), err: err}
		}
		return nil, err
	}
	f.srv = srv
	go func() { f.served <- srv.Serve() }()
	if !o.noLAN && !o.noMDNS && len(f.lan) > 0 {
		ips := make([]net.IP, 0, len(f.lan))
		for _, l := range f.lan {
			ips = append(ips, l.IP)
		}
		f.adv, err = devserver.Advertise(devserver.MDNSOptions{Name: mdnsName, Instance: opts.Title, Port: srv.Port(), IPs: ips})
		if err != nil {
			out.warn("mDNS advertising failed (phones can still use the IP addresses): %v", err)
		} else {
			f.mdnsHost = mdnsName + ".local"
		}
	}
	return f, nil
}

// close stops advertising, shuts the server down (closing every page's
// socket) and returns what Serve returned.
func (f *front) close() error {
	if f.adv != nil {
		f.adv.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f.srv.Shutdown(ctx)
	return <-f.served
}

func lanURLs(lan []devserver.LANAddr, port int) []string {
	var out []string
	for _, l := range lan {
		out = append(out, "http://"+net.JoinHostPort(l.IP.String(), strconv.Itoa(port))+"/")
	}
	return out
}

// printListening prints the listening event: the URLs on this machine and
// the LAN, the swarm address and a QR code of the first LAN URL.
func (f *front) printListening(out *printer, what string, a *hyperdrive.Archive, n *network, extra ...any) {
	srv := f.srv
	urls := lanURLs(f.lan, srv.Port())
	if urls == nil {
		urls = []string{}
	}
	ev := map[string]any{"event": "listening", "url": srv.LocalURL(), "dat": a.Key().URL(), "lan": urls, "version": a.Version()}
	for i := 0; i+1 < len(extra); i += 2 {
		ev[extra[i].(string)] = extra[i+1]
	}
	if f.mdnsHost != "" {
		ev["mdns"] = f.mdnsHost
	}
	if n != nil {
		ev["swarm"] = n.swarm.Addr()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)\n", what, a.Key().URL())
	fmt.Fprintf(&b, "  Local:    http://localhost:%d/\n", srv.Port())
	for i, l := range f.lan {
		fmt.Fprintf(&b, "  Network:  %-28s (%s)\n", urls[i], l.Interface)
	}
	if f.mdnsHost != "" {
		fmt.Fprintf(&b, "  mDNS:     http://%s:%d/\n", f.mdnsHost, srv.Port())
	}
	fmt.Fprintf(&b, "  Dashboard: http://localhost:%d/.beaker-dev/\n", srv.Port())
	if n != nil {
		fmt.Fprintf(&b, "  Swarm:    %s (discovery: %s)\n", n.swarm.Addr(), n.sources())
	}
	if len(urls) > 0 {
		if qr, err := devserver.QR(urls[0]); err == nil {
			fmt.Fprintf(&b, "\n%s\n  Scan to open %s on a phone on this network.", qr, urls[0])
		}
	}
	out.event(ev, b.String())
}

func printDevEvent(out *printer, e devserver.Event) {
	switch e := e.(type) {
	case devserver.PaintEvent:
		how := "reload"
		if e.Swap {
			how = "swap"
		}
		who := e.Device
		if e.Remote {
			who = "remote viewer " + e.Device
		}
		ev := map[string]any{"event": "paint", "device": e.Device, "path": e.Path, "version": e.Version, "swap": e.Swap, "ms": ms(e.SaveToPaint)}
		if e.Remote {
			ev["remote"] = true
		}
		where := e.Path
		if where == "" {
			where = "version " + e.Version
		}
		out.event(ev, fmt.Sprintf("  %s: save → paint %d ms (%s, %s)", who, e.SaveToPaint.Milliseconds(), how, where))
	case devserver.ViolationEvent:
		out.event(map[string]any{"event": "violation", "directive": e.Directive, "blocked": e.Blocked, "page": e.Page, "advice": e.Advice},
			fmt.Sprintf("Sandbox: %s blocked %s on %s. %s", e.Directive, e.Blocked, e.Page, e.Advice))
	case devserver.ClientEvent:
		if e.Connected {
			out.event(map[string]any{"event": "client", "device": e.Device, "clients": e.Clients},
				fmt.Sprintf("  %s connected (%d page(s) open)", e.Device, e.Clients))
		}
	}
}

// archiveStatus feeds the dashboard: versions, tags and the swarm's peers.
func archiveStatus(a *hyperdrive.Archive, n *network) devserver.Status {
	st := devserver.Status{Version: strconv.FormatUint(a.Version(), 10)}
	if n != nil {
		st.Peers = n.peersOf(a)
	}
	tags := map[uint64][]string{}
	for _, t := range a.Tags() {
		tags[t.Version] = append(tags[t.Version], t.Name)
	}
	vs := a.Versions()
	prev := uint64(0)
	for _, v := range vs {
		st.Versions = append(st.Versions, devserver.StatusVersion{Version: v.Length, Time: time.Unix(0, v.Time), Changes: int(v.Length - prev), Tags: tags[v.Length]})
		prev = v.Length
	}
	for i, j := 0, len(st.Versions)-1; i < j; i, j = i+1, j-1 {
		st.Versions[i], st.Versions[j] = st.Versions[j], st.Versions[i]
	}
	if len(st.Versions) > 50 {
		st.Versions = st.Versions[:50]
	}
	return st
}
