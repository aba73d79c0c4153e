package discovery

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/anacrolix/dht/v2/bep44"
	"github.com/anacrolix/dht/v2/krpc"
	peer_store "github.com/anacrolix/dht/v2/peer-store"
)

// PeerStoreConfig bounds what a DHT node stores for others. A node answers
// the announces of anyone on the Internet, so every limit here is what keeps
// a spammer from growing our memory without bound. Zero values mean the
// defaults.
type PeerStoreConfig struct {
	// TTL is how long a peer stays after its last announce. BEP 5 leaves it
	// to the implementation; peers re-announce every 15–30 minutes (tokens
	// rotate), so 30 minutes keeps live peers and drops the ones that went
	// away. Default 30 minutes.
	TTL time.Duration
	// MaxPerInfoHash caps the peers kept for one infohash. When it is
	// full, an announce from a new address replaces a random one (after
	// expired ones are dropped): new peers keep getting in, and a flood
	// from many addresses cannot lock the swarm's real peers out for a
	// whole TTL. Default 100.
	MaxPerInfoHash int
	// MaxPerIP caps the ports one IP may hold for one infohash. Tokens are
	// bound to the announcer's IP, so one host can announce any number of
	// ports; this stops it from filling an infohash alone, while a few
	// peers behind one NAT still fit. Default 8.
	MaxPerIP int
	// MaxTotal caps the peers kept across all infohashes (and so also
	// bounds the number of infohashes). When it is full, announces for new
	// addresses are ignored until entries expire. Default 10000 (about
	// 1 MB).
	MaxTotal int
	// MaxReturned caps the peers sent in one get_peers reply (a random
	// sample when more are stored), keeping replies within one unfragmented
	// UDP datagram. Default 50.
	MaxReturned int
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

func (c PeerStoreConfig) withDefaults() PeerStoreConfig {
	if c.TTL <= 0 {
		c.TTL = 30 * time.Minute
	}
	if c.MaxPerInfoHash <= 0 {
		c.MaxPerInfoHash = 100
	}
	if c.MaxPerIP <= 0 {
		c.MaxPerIP = 8
	}
	if c.MaxTotal <= 0 {
		c.MaxTotal = 10000
	}
	if c.MaxReturned <= 0 {
		c.MaxReturned = 50
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// PeerStore keeps the peers announced to this node, keyed by infohash and
// then by ip:port. It replaces the library's peer_store.InMemory, which in
// anacrolix/dht v2.23.0 keys peers by IP alone and then decodes that key as
// IP+port, so get_peers never returns any value (anacrolix/dht#79). Keying
// by ip:port also lets several peers share an IP (a NAT, or a test on one
// machine). Expired entries are dropped lazily, when their infohash is read
// or written and when the store is full, so the store needs no goroutine.
type PeerStore struct {
	cfg PeerStoreConfig

	mu        sync.Mutex
	hashes    map[peer_store.InfoHash]map[netip.AddrPort]time.Time // last announce
	total     int
	lastSweep time.Time
}

var _ peer_store.Interface = (*PeerStore)(nil)

// NewPeerStore returns an empty store with cfg's limits.
func NewPeerStore(cfg PeerStoreConfig) *PeerStore {
	return &PeerStore{
		cfg:    cfg.withDefaults(),
		hashes: make(map[peer_store.InfoHash]map[netip.AddrPort]time.Time),
	}
}

// peerAddrPort converts a wire address to a map key: IPv4-mapped IPv6
// addresses (what a dual-stack socket reports for IPv4 peers) become IPv4,
// so one peer has one key. It rejects what no one can connect to.
func peerAddrPort(na krpc.NodeAddr) (netip.AddrPort, bool) {
	ip, ok := netip.AddrFromSlice(na.IP)
	if !ok || na.Port <= 0 || na.Port > 0xffff {
		return netip.AddrPort{}, false
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, uint16(na.Port)), true
}

// AddPeer records an announce: the library calls it for each announce_peer
// with a valid token, with the announcer's source IP and its (possibly
// implied) port.
func (s *PeerStore) AddPeer(ih peer_store.InfoHash, na krpc.NodeAddr) {
	ap, ok := peerAddrPort(na)
	if !ok {
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	peers := s.hashes[ih]
	if _, ok := peers[ap]; ok {
		peers[ap] = now // a re-announce: refresh
		return
	}
	if peers != nil {
		s.expireLocked(ih, peers, now)
		peers = s.hashes[ih] // nil if all expired
	}
	// A full infohash, or an IP at its limit, trades an old entry for the
	// new one; only an announce that would add an entry meets MaxTotal.
	sameIP := 0
	var victim netip.AddrPort
	for p := range peers {
		if p.Addr() == ap.Addr() {
			sameIP++
			victim = p // map order is random: a random one of this IP's ports
		}
	}
	switch {
	case sameIP >= s.cfg.MaxPerIP:
	case len(peers) >= s.cfg.MaxPerInfoHash:
		for p := range peers { // a random one, as map order is
			victim = p
			break
		}
	default:
		victim = netip.AddrPort{}
		if s.total >= s.cfg.MaxTotal {
			s.sweepLocked(now)
			peers = s.hashes[ih]
			if s.total >= s.cfg.MaxTotal {
				return
			}
		}
	}
	if victim.IsValid() {
		delete(peers, victim)
		s.total--
	}
	if peers == nil {
		peers = make(map[netip.AddrPort]time.Time)
		s.hashes[ih] = peers
	}
	peers[ap] = now
	s.total++
}

// GetPeers returns the live peers of ih for a get_peers reply, at most
// MaxReturned of them, chosen at random when there are more.
func (s *PeerStore) GetPeers(ih peer_store.InfoHash) []krpc.NodeAddr {
	now := s.cfg.Now()
	s.mu.Lock()
	peers := s.hashes[ih]
	if peers != nil {
		s.expireLocked(ih, peers, now)
	}
	ret := make([]krpc.NodeAddr, 0, min(len(peers), s.cfg.MaxReturned))
	for p := range peers {
		ret = append(ret, krpc.NodeAddr{IP: p.Addr().AsSlice(), Port: int(p.Port())})
	}
	s.mu.Unlock()
	if len(ret) > s.cfg.MaxReturned {
		rand.Shuffle(len(ret), func(i, j int) { ret[i], ret[j] = ret[j], ret[i] })
		ret = ret[:s.cfg.MaxReturned]
	}
	return ret
}

// Len returns the number of live peers stored, over all infohashes.
func (s *PeerStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.cfg.Now())
	return s.total
}

// lastSeen returns when addr last announced ih, for tests.
func (s *PeerStore) lastSeen(ih [20]byte, addr netip.AddrPort) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.hashes[ih][addr]
	return t, ok && s.cfg.Now().Sub(t) < s.cfg.TTL
}

// expireLocked drops ih's expired peers, and ih itself when none is left.
func (s *PeerStore) expireLocked(ih peer_store.InfoHash, peers map[netip.AddrPort]time.Time, now time.Time) {
	for p, seen := range peers {
		if now.Sub(seen) >= s.cfg.TTL {
			delete(peers, p)
			s.total--
		}
	}
	if len(peers) == 0 {
		delete(s.hashes, ih)
	}
}

// sweepLocked drops the expired peers of every infohash. It walks the whole
// store, so while the store stays full it runs at most once a minute (or
// once a TTL, if shorter): in between, new announces are simply ignored.
func (s *PeerStore) sweepLocked(now time.Time) {
	every := min(time.Minute, s.cfg.TTL)
	if !s.lastSweep.IsZero() && now.Sub(s.lastSweep) < every && s.total >= s.cfg.MaxTotal {
		return
	}
	s.lastSweep = now
	for ih, peers := range s.hashes {
		s.expireLocked(ih, peers, now)
	}
}

// itemStore is the BEP 44 (put/get) store of a node: the library's default,
// bep44.Memory, grows with every distinct put anyone sends. This one holds
// at most max items; when full, a put of a new target replaces a random
// item, so a flood of puts costs bounded memory and the newest items still
// get stored. The library's bep44.Wrapper around it checks signatures and
// sequence numbers and expires items (ServerConfig.Exp).
type itemStore struct {
	max   int
	mu    sync.Mutex
	items map[bep44.Target]*bep44.Item
}

var _ bep44.Store = (*itemStore)(nil)

func newItemStore(max int) *itemStore {
	return &itemStore{max: max, items: make(map[bep44.Target]*bep44.Item)}
}

func (s *itemStore) Put(i *bep44.Item) error {
	t := i.Target()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.items[t]; !ok && len(s.items) >= s.max {
		for k := range s.items {
			delete(s.items, k)
			break
		}
	}
	s.items[t] = i
	return nil
}

func (s *itemStore) Get(t bep44.Target) (*bep44.Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.items[t]
	if !ok {
		return nil, bep44.ErrItemNotFound
	}
	return i, nil
}

func (s *itemStore) Del(t bep44.Target) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.items, t)
	return nil
}
