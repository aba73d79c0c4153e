package discovery

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNSServerOptions configure a discovery server. Zero values mean the
// defaults.
type DNSServerOptions struct {
	// Domain is the discovery domain; default "dat.local". dns-discovery's
	// clients only work with a domain of exactly two labels.
	Domain string
	// TTL is how long an announce lives without renewal. dns-discovery
	// keeps announces forever unless started with --ttl (and then uses the
	// same number as the TTL of its records); Dat's clients renew every 60
	// to 70 s. The default, 5 minutes, keeps a peer through a few lost
	// renewals and forgets one that left. Answers carry DNS TTL 0, as
	// dns-discovery's do by default: they describe live state.
	TTL time.Duration
	// SubscriptionTTL is how long a subscription to pushes lives without
	// renewal; default 60 s, as dns-discovery's.
	SubscriptionTTL time.Duration
	// MaxAnnounces caps the announces kept in all; default 10000, as
	// dns-discovery's limit. The same cap applies to subscriptions. When
	// full, the least recently renewed entry makes room.
	MaxAnnounces int
	// MaxPerID caps the announces kept for one ID (and the subscriptions to
	// one ID); default 1000. When full, the ID's least recently renewed
	// entry makes room, so newcomers always get in.
	MaxPerID int
	// MaxPerHost caps the announces (and the subscriptions) of one source
	// IP over all IDs; default 256. A token proves only the IP, so one host
	// could otherwise announce every port it has and push everyone else out
	// of the table; with the cap it only pushes out its own older entries,
	// while the peers behind one NAT still fit.
	MaxPerHost int
	// Logf receives debug messages; nil drops them.
	Logf func(format string, args ...any)
}

// DNSServer is a DNS discovery server (`beaker-dev bootstrap --dns`),
// compatible with dns-discovery v6's: it stores announces that come with a
// valid token, answers lookups and probes, and pushes new announces to
// subscribers. It listens on UDP only, as dns-discovery's servers and
// clients use nothing else.
type DNSServer struct {
	conn   *net.UDPConn
	domain string
	opts   DNSServerOptions
	logf   func(format string, args ...any)

	mu        sync.Mutex
	secrets   [2][32]byte // [0] the previous secret, [1] the current one
	rotateAt  time.Time
	announces *dnsStore
	subs      *dnsStore
	pushes    map[uint16]*dnsPush // pushes awaiting an acknowledgement

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// dnsPush is a push waiting for its acknowledgement.
type dnsPush struct {
	pkt  []byte
	to   netip.AddrPort
	next time.Time     // when to resend, or give up when none is left
	wait time.Duration // the delay after the next resend
	left int           // resends left
}

// dnsPacket is a packet for the server to send.
type dnsPacket struct {
	pkt []byte
	to  netip.AddrPort
}

const (
	// dnsMaxQuestions bounds the questions answered in one query; clients
	// ask one.
	dnsMaxQuestions = 16
	// dnsMaxPendingPushes bounds the pushes tracked for resending; more
	// are sent once.
	dnsMaxPendingPushes = 4096
	// dnsPushResends is how often an unacknowledged push is resent, as in
	// dns-discovery (dns-socket's setRetries(id, 2)).
	dnsPushResends = 2
	// dnsTick is how often the server resends pushes and expires entries;
	// dns-socket's timer runs every 250 ms.
	dnsTick = 250 * time.Millisecond
)

// ListenDNS starts a discovery server on the UDP address addr
// ("0.0.0.0:53", or "127.0.0.1:0" for a random port).
func ListenDNS(addr string, opts DNSServerOptions) (*DNSServer, error) {
	s, err := newDNSServer(opts)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("discovery: dns: listen %s: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("discovery: dns: listen %s: %w", addr, err)
	}
	s.conn = conn
	s.wg.Add(2)
	go s.serve()
	go s.maintain()
	return s, nil
}

// newDNSServer makes a server's state without a socket: ListenDNS adds
// one, the fuzz target feeds handle directly.
func newDNSServer(opts DNSServerOptions) (*DNSServer, error) {
	domain, err := dnsCanonicalDomain(opts.Domain)
	if err != nil {
		return nil, err
	}
	if opts.TTL <= 0 {
		opts.TTL = 5 * time.Minute
	}
	if opts.SubscriptionTTL <= 0 {
		opts.SubscriptionTTL = 60 * time.Second
	}
	if opts.MaxAnnounces <= 0 {
		opts.MaxAnnounces = 10000
	}
	if opts.MaxPerID <= 0 {
		opts.MaxPerID = 1000
	}
	if opts.MaxPerHost <= 0 {
		opts.MaxPerHost = 256
	}
	s := &DNSServer{
		domain:    domain,
		opts:      opts,
		logf:      opts.Logf,
		rotateAt:  time.Now().Add(dnsSecretRotation),
		announces: newDNSStore(opts.TTL, opts.MaxAnnounces, opts.MaxPerID, opts.MaxPerHost),
		subs:      newDNSStore(opts.SubscriptionTTL, opts.MaxAnnounces, opts.MaxPerID, opts.MaxPerHost),
		pushes:    make(map[uint16]*dnsPush),
		done:      make(chan struct{}),
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	for i := range s.secrets {
		if _, err := rand.Read(s.secrets[i][:]); err != nil {
			return nil, fmt.Errorf("discovery: dns: secret: %w", err)
		}
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *DNSServer) Addr() net.Addr { return s.conn.LocalAddr() }

// Close stops the server and waits for its goroutines.
func (s *DNSServer) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		if err := s.conn.Close(); err != nil {
			s.closeErr = fmt.Errorf("discovery: dns: %w", err)
		}
		s.wg.Wait()
	})
	return s.closeErr
}

// serve reads packets until Close closes the socket.
func (s *DNSServer) serve() {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logf("discovery: dns: read: %v", err)
			select {
			case <-s.done:
				return
			case <-time.After(10 * time.Millisecond): // no busy loop on a lasting error
			}
			continue
		}
		reply, out := s.handle(buf[:n], from, time.Now())
		if reply != nil {
			s.send(reply, from)
		}
		for _, p := range out {
			s.send(p.pkt, p.to)
		}
	}
}

func (s *DNSServer) send(pkt []byte, to netip.AddrPort) {
	if _, err := s.conn.WriteToUDPAddrPort(pkt, to); err != nil {
		s.logf("discovery: dns: send to %v: %v", to, err)
	}
}

// maintain resends pushes, expires entries and rotates the secret until
// Close.
func (s *DNSServer) maintain() {
	defer s.wg.Done()
	t := time.NewTicker(dnsTick)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			for _, p := range s.tick(now) {
				s.send(p.pkt, p.to)
			}
		}
	}
}

// tick does the periodic work due at now and returns the pushes to resend.
func (s *DNSServer) tick(now time.Time) []dnsPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !now.Before(s.rotateAt) {
		s.rotateSecretsLocked()
		s.rotateAt = now.Add(dnsSecretRotation)
	}
	s.announces.expire(now)
	s.subs.expire(now)
	var out []dnsPacket
	for id, p := range s.pushes {
		if now.Before(p.next) {
			continue
		}
		if p.left == 0 {
			delete(s.pushes, id)
			continue
		}
		p.left--
		p.next = now.Add(p.wait)
		p.wait *= 2
		if p.left == 0 {
			p.next = now.Add(dnsTick) // then give up, as dns-socket does
		}
		out = append(out, dnsPacket{p.pkt, p.to})
	}
	return out
}

// rotateSecretsLocked replaces the previous secret by a new current one:
// tokens of the current secret stay valid for one more period.
func (s *DNSServer) rotateSecretsLocked() {
	s.secrets[0] = s.secrets[1]
	if _, err := rand.Read(s.secrets[1][:]); err != nil {
		// crypto/rand does not fail on supported systems; keeping the old
		// secret is the safe fallback.
		s.logf("discovery: dns: rotate secret: %v", err)
	}
}

// dnsToken is base64(sha256(secret || host)) with host the source IP as
// text, as dns-discovery computes it.
func dnsToken(secret *[32]byte, host netip.Addr) string {
	h := sha256.New()
	h.Write(secret[:])
	h.Write([]byte(host.Unmap().String()))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// validTokenLocked tells whether tok was issued to host under the current
// or the previous secret.
func (s *DNSServer) validTokenLocked(tok string, host netip.Addr) bool {
	for i := range s.secrets {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(dnsToken(&s.secrets[i], host))) == 1 {
			return true
		}
	}
	return false
}

// handle handles one packet from `from`, received at now, and returns the
// reply (nil for none) and the pushes to send. Malformed packets get no
// reply, like dns-socket's, and change nothing.
func (s *DNSServer) handle(pkt []byte, from netip.AddrPort, now time.Time) (reply []byte, out []dnsPacket) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	var m dns.Msg
	if err := m.Unpack(pkt); err != nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Response {
		// The acknowledgement of a push, or nothing we asked for.
		if p, ok := s.pushes[m.Id]; ok && p.to == from {
			delete(s.pushes, m.Id)
		}
		return nil, nil
	}
	if len(m.Question) > dnsMaxQuestions {
		return nil, nil
	}
	r := new(dns.Msg)
	r.Id = m.Id
	r.Response = true // and no other flag, as dns-socket's responses
	r.Question = m.Question
	// Answers first, then the records, as dns-discovery does: an announce
	// is not in its own answer.
	for _, q := range m.Question {
		r.Answer = append(r.Answer, s.answerLocked(q, from, now)...)
	}
	for _, rr := range m.Answer {
		out = append(out, s.recordLocked(rr, from, now)...)
	}
	for _, rr := range m.Extra {
		out = append(out, s.recordLocked(rr, from, now)...)
	}
	reply, err := r.Pack()
	if err != nil {
		s.logf("discovery: dns: reply to %v: %v", from, err)
		reply = nil
	}
	return reply, out
}

// answerLocked answers one question from `from`.
func (s *DNSServer) answerLocked(q dns.Question, from netip.AddrPort, now time.Time) []dns.RR {
	id, apex, ok := dnsSplitName(q.Name, s.domain)
	if !ok {
		return nil
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 0}
	}
	tok := dnsToken(&s.secrets[1], from.Addr())
	if apex {
		if q.Qtype != dns.TypeTXT {
			return nil
		}
		// The probe: a token, and the client's address as we see it.
		return []dns.RR{&dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: dnsEncodeTXT(
			"token", tok,
			"host", from.Addr().String(),
			"port", strconv.Itoa(int(from.Port())),
		)}}
	}
	switch q.Qtype {
	case dns.TypeTXT:
		peers := s.announces.sample(id, dnsMaxTXTPeers, now)
		kv := []string{"token", tok}
		if len(peers) > 0 {
			kv = append(kv, "peers", base64.StdEncoding.EncodeToString(dnsEncodePeers(peers)))
		}
		return []dns.RR{&dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: dnsEncodeTXT(kv...)}}
	case dns.TypeA:
		var rrs []dns.RR
		for _, p := range s.announces.sample(id, dnsMaxRecordPeers, now) {
			rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA), A: p.Addr().AsSlice()})
		}
		return rrs
	case dns.TypeSRV:
		var rrs []dns.RR
		for _, p := range s.announces.sample(id, dnsMaxRecordPeers, now) {
			rrs = append(rrs, &dns.SRV{Hdr: hdr(dns.TypeSRV), Port: p.Port(), Target: p.Addr().String() + "."})
		}
		return rrs
	}
	return nil
}

// recordLocked applies one record of a query from `from`: a TXT record
// with a valid token may announce, unannounce and (un)subscribe. It returns
// the pushes a new announce causes.
func (s *DNSServer) recordLocked(rr dns.RR, from netip.AddrPort, now time.Time) []dnsPacket {
	txt, ok := rr.(*dns.TXT)
	if !ok {
		return nil // dns-discovery's servers only log SRV records
	}
	id, apex, ok := dnsSplitName(txt.Hdr.Name, s.domain)
	if !ok || apex {
		return nil
	}
	data := dnsDecodeTXT(txt.Txt)
	tok := data["token"]
	if tok.bare || !s.validTokenLocked(tok.val, from.Addr()) {
		s.logf("discovery: dns: %v: invalid token for %s", from, id)
		return nil
	}
	var out []dnsPacket
	// The peers format holds IPv4 only; dns-discovery's sockets are udp4.
	v4 := from.Addr().Is4()
	if v, ok := data["announce"]; ok && v4 {
		if port, ok := dnsParsePort(v); ok {
			if port == 0 {
				port = from.Port() // impliedPort
			}
			peer := netip.AddrPortFrom(from.Addr(), port)
			if s.announces.add(id, peer, now) {
				s.logf("discovery: dns: announce %s %v", id, peer)
				out = s.pushLocked(id, peer, now)
			}
		}
	}
	if v, ok := data["unannounce"]; ok && v4 {
		if port, ok := dnsParsePort(v); ok {
			if port == 0 {
				port = from.Port()
			}
			s.announces.remove(id, netip.AddrPortFrom(from.Addr(), port))
		}
	}
	if data["subscribe"].truthy() {
		s.subs.add(id, from, now)
	} else {
		s.subs.remove(id, from)
	}
	return out
}

// pushLocked builds the pushes of a new announce of peer for id to up to
// 16 random subscribers, and tracks them for resending.
func (s *DNSServer) pushLocked(id string, peer netip.AddrPort, now time.Time) []dnsPacket {
	subs := s.subs.sample(id, dnsMaxPushes, now)
	var out []dnsPacket
	for _, to := range subs {
		m := new(dns.Msg)
		m.RecursionDesired = true // dns-socket's default flags for a query
		m.Extra = []dns.RR{&dns.SRV{
			Hdr:    dns.RR_Header{Name: id + "." + s.domain + ".", Rrtype: dns.TypeSRV, Class: dns.ClassINET},
			Port:   peer.Port(),
			Target: peer.Addr().String() + ".",
		}}
		var mid uint16
		for {
			mid = uint16(mrand.IntN(0xffff) + 1)
			if _, used := s.pushes[mid]; !used {
				break
			}
		}
		m.Id = mid
		pkt, err := m.Pack()
		if err != nil {
			continue
		}
		if len(s.pushes) < dnsMaxPendingPushes {
			s.pushes[mid] = &dnsPush{pkt: pkt, to: to, next: now.Add(500 * time.Millisecond), wait: time.Second, left: dnsPushResends}
		}
		out = append(out, dnsPacket{pkt, to})
	}
	return out
}

// dnsStore keeps (ID, address) entries that expire ttl after their last
// renewal, with caps in total, per ID and per host. Each entry is in three
// lists ordered by last renewal, so expiry and eviction of the least
// recently renewed entry take constant time per entry.
type dnsStore struct {
	ttl                          time.Duration
	maxTotal, maxPerID, maxPerIP int

	all   *list.List // of *dnsEntry
	ids   map[string]*dnsIDEntries
	hosts map[netip.Addr]*list.List
}

type dnsEntry struct {
	id                  string
	addr                netip.AddrPort
	renewed             time.Time
	inAll, inID, inHost *list.Element
}

type dnsIDEntries struct {
	order  *list.List
	byAddr map[netip.AddrPort]*dnsEntry
}

func newDNSStore(ttl time.Duration, maxTotal, maxPerID, maxPerIP int) *dnsStore {
	return &dnsStore{
		ttl: ttl, maxTotal: maxTotal, maxPerID: maxPerID, maxPerIP: maxPerIP,
		all:   list.New(),
		ids:   make(map[string]*dnsIDEntries),
		hosts: make(map[netip.Addr]*list.List),
	}
}

// add adds or renews (id, addr) and tells whether it is new.
func (st *dnsStore) add(id string, addr netip.AddrPort, now time.Time) bool {
	st.expire(now)
	if e := st.ids[id]; e != nil {
		if old := e.byAddr[addr]; old != nil {
			old.renewed = now
			st.all.MoveToBack(old.inAll)
			e.order.MoveToBack(old.inID)
			st.hosts[addr.Addr()].MoveToBack(old.inHost)
			return false
		}
	}
	if h := st.hosts[addr.Addr()]; h != nil && h.Len() >= st.maxPerIP {
		st.drop(h.Front().Value.(*dnsEntry))
	}
	if e := st.ids[id]; e != nil && e.order.Len() >= st.maxPerID {
		st.drop(e.order.Front().Value.(*dnsEntry))
	}
	if st.all.Len() >= st.maxTotal {
		st.drop(st.all.Front().Value.(*dnsEntry))
	}
	e := st.ids[id]
	if e == nil {
		e = &dnsIDEntries{order: list.New(), byAddr: make(map[netip.AddrPort]*dnsEntry)}
		st.ids[id] = e
	}
	h := st.hosts[addr.Addr()]
	if h == nil {
		h = list.New()
		st.hosts[addr.Addr()] = h
	}
	ent := &dnsEntry{id: id, addr: addr, renewed: now}
	ent.inAll = st.all.PushBack(ent)
	ent.inID = e.order.PushBack(ent)
	ent.inHost = h.PushBack(ent)
	e.byAddr[addr] = ent
	return true
}

// remove removes (id, addr) if present.
func (st *dnsStore) remove(id string, addr netip.AddrPort) {
	if e := st.ids[id]; e != nil {
		if ent := e.byAddr[addr]; ent != nil {
			st.drop(ent)
		}
	}
}

func (st *dnsStore) drop(ent *dnsEntry) {
	st.all.Remove(ent.inAll)
	e := st.ids[ent.id]
	e.order.Remove(ent.inID)
	delete(e.byAddr, ent.addr)
	if e.order.Len() == 0 {
		delete(st.ids, ent.id)
	}
	h := st.hosts[ent.addr.Addr()]
	h.Remove(ent.inHost)
	if h.Len() == 0 {
		delete(st.hosts, ent.addr.Addr())
	}
}

// expire drops the entries not renewed for longer than the TTL.
func (st *dnsStore) expire(now time.Time) {
	for f := st.all.Front(); f != nil; f = st.all.Front() {
		ent := f.Value.(*dnsEntry)
		if now.Sub(ent.renewed) <= st.ttl {
			return
		}
		st.drop(ent)
	}
}

// sample returns up to max live addresses of id, chosen at random.
func (st *dnsStore) sample(id string, max int, now time.Time) []netip.AddrPort {
	st.expire(now)
	e := st.ids[id]
	if e == nil {
		return nil
	}
	addrs := make([]netip.AddrPort, 0, e.order.Len())
	for el := e.order.Front(); el != nil; el = el.Next() {
		addrs = append(addrs, el.Value.(*dnsEntry).addr)
	}
	if len(addrs) > max {
		for i := 0; i < max; i++ {
			j := i + mrand.IntN(len(addrs)-i)
			addrs[i], addrs[j] = addrs[j], addrs[i]
		}
		addrs = addrs[:max]
	}
	return addrs
}

// len is the number of live and not yet swept entries.
func (st *dnsStore) len() int { return st.all.Len() }

// count is the number of entries of id.
func (st *dnsStore) count(id string) int {
	if e := st.ids[id]; e != nil {
		return e.order.Len()
	}
	return 0
}
