package discovery

import (
	"context"
	"io"
	"log"
	"net/netip"
)

// DHTSource makes a DHT a swarm discovery source: the infohash is the
// first 20 bytes of the discovery key, announced with the implied port
// (the swarm's uTP shares the DHT's UDP socket).
type DHTSource struct{ DHT *DHT }

// Name implements the swarm's Source.
func (s DHTSource) Name() string { return "dht" }

// Announce announces dk until ctx is done.
func (s DHTSource) Announce(ctx context.Context, dk [32]byte, port int) {
	s.DHT.Announce(ctx, [20]byte(dk[:20]), port, true)
}

// Lookup runs one DHT traversal for dk.
func (s DHTSource) Lookup(ctx context.Context, dk [32]byte) ([]netip.AddrPort, error) {
	return s.DHT.Lookup(ctx, [20]byte(dk[:20]))
}

// DNSSource makes DNS discovery servers a swarm discovery source.
type DNSSource struct{ Client *DNSClient }

// Name implements the swarm's Source.
func (s DNSSource) Name() string { return "dns" }

// Announce announces dk on the servers until ctx is done.
func (s DNSSource) Announce(ctx context.Context, dk [32]byte, port int) {
	s.Client.Announce(ctx, DNSID(dk[:]), port)
}

// Lookup asks the servers for dk's peers.
func (s DNSSource) Lookup(ctx context.Context, dk [32]byte) ([]netip.AddrPort, error) {
	return s.Client.Lookup(ctx, DNSID(dk[:]))
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }
