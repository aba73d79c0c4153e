package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/hyperdrive/discovery"
	"github.com/beaker-dev/beaker-dev/hyperdrive/swarm"
)

// networkOptions are the global flags of every command that uses the swarm.
type networkOptions struct {
	bootstrap    string
	noMDNS       bool
	noDHT        bool
	dnsDiscovery string
	listen       string
	peers        cli.StringSlice
	transport    string
}

func networkFlags(n *networkOptions) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "bootstrap", Usage: "DHT bootstrap nodes HOST:PORT[,HOST:PORT] (default: the public routers; none disables the DHT)", Destination: &n.bootstrap},
		&cli.BoolFlag{Name: "no-mdns", Usage: "do not find peers on the LAN by mDNS", Destination: &n.noMDNS},
		&cli.BoolFlag{Name: "no-dht", Usage: "do not use the Mainline DHT", Destination: &n.noDHT},
		&cli.StringFlag{Name: "dns-discovery", Usage: "DNS discovery servers HOST:PORT[,HOST:PORT]", Destination: &n.dnsDiscovery},
		&cli.StringFlag{Name: "listen", Usage: "swarm address for TCP and uTP (default 0.0.0.0:3282, or a free port)", Destination: &n.listen},
		&cli.StringSliceFlag{Name: "peer", Usage: "a peer to connect to, HOST:PORT (repeatable)", Destination: &n.peers},
		&cli.StringFlag{Name: "transport", Value: "both", Usage: "tcp, utp or both", Destination: &n.transport},
	}
}

// network is a running swarm with its discovery sources. Close stops them
// in the order they need: sources first (the DHT reads the swarm's UDP
// socket), the swarm last.
type network struct {
	swarm *swarm.Swarm
	dht   *discovery.DHT
	dns   *discovery.DNSClient
	mdns  *discovery.MDNS
	peers []netip.AddrPort
	names []string // the sources in use, for messages
}

// startNetwork starts the swarm and the discovery sources the flags allow.
// A source that cannot start is a warning: the others still work.
func (g *globalOptions) startNetwork(ctx context.Context) (*network, error) {
	n := &network{}
	for _, p := range g.net.peers.Value() {
		for _, one := range strings.Split(p, ",") {
			ap, err := netip.ParseAddrPort(strings.TrimSpace(one))
			if err != nil {
				return nil, usagef("--peer %q: want IP:PORT", one)
			}
			n.peers = append(n.peers, ap)
		}
	}
	s, err := swarm.New(swarm.Config{Listen: g.net.listen, Transport: g.net.transport, Warn: func(m string) { g.warn("%s", m) }})
	if err != nil {
		if strings.Contains(err.Error(), "transport") {
			return nil, usagef("%s", clean(err))
		}
		return nil, err
	}
	n.swarm = s
	if len(n.peers) > 0 {
		n.names = append(n.names, "--peer")
	}
	bootstrap := strings.TrimSpace(g.net.bootstrap)
	if !g.net.noDHT && bootstrap != "none" {
		var nodes []string
		if bootstrap != "" {
			nodes = []string{}
			for _, b := range strings.Split(bootstrap, ",") {
				nodes = append(nodes, strings.TrimSpace(b))
			}
		}
		d, err := discovery.StartDHT(ctx, discovery.DHTConfig{Conn: s.PacketConn(), Bootstrap: nodes, Warn: func(m string) { g.warn("%s", m) }})
		if err != nil {
			g.warn("the DHT could not start (peers will be found by other means): %v", err)
		} else {
			n.dht = d
			s.AddSource(discovery.DHTSource{DHT: d})
			n.names = append(n.names, "dht")
		}
	}
	if servers := strings.TrimSpace(g.net.dnsDiscovery); servers != "" {
		c, err := discovery.NewDNSClient(strings.Split(servers, ","), "")
		if err != nil {
			g.warn("DNS discovery could not start: %v", err)
		} else {
			n.dns = c
			s.AddSource(discovery.DNSSource{Client: c})
			n.names = append(n.names, "dns")
		}
	}
	if !g.net.noMDNS {
		n.mdns = discovery.NewMDNS(nil)
		// A swarm bound to one address is reachable there only.
		if host, _, err := net.SplitHostPort(g.net.listen); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				n.mdns.IPs = []net.IP{ip}
			}
		}
		s.AddSource(n.mdns)
		n.names = append(n.names, "mdns")
	}
	return n, nil
}

func (n *network) Close() {
	if n.dht != nil {
		n.dht.Close()
	}
	if n.mdns != nil {
		n.mdns.Close()
	}
	if n.dns != nil {
		n.dns.Close()
	}
	n.swarm.Close()
}

// sources says which discovery sources are in use.
func (n *network) sources() string {
	if len(n.names) == 0 {
		return "none"
	}
	return strings.Join(n.names, ", ")
}

// peersOf lists the peers connected for archive a, for the dashboard.
func (n *network) peersOf(a *hyperdrive.Archive) []string {
	if f := n.swarm.Feed(a.Key()); f != nil {
		return f.Peers()
	}
	return nil
}

// errNoPeers: nobody with the archive could be reached.
var errNoPeers = errors.New("no peers")

func noPeersError(url string, n *network, cause error) error {
	msg := fmt.Sprintf("no peer with %s could be reached (discovery: %s)", url, n.sources())
	if cause != nil && !errors.Is(cause, context.DeadlineExceeded) {
		msg += ": " + clean(cause)
	}
	return &userError{code: exitNetwork, msg: msg + "; check the network, or give a peer with --peer HOST:PORT", err: errNoPeers}
}
