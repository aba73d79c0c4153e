package discovery

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// The DNS discovery protocol, as the npm package dns-discovery (v6.2.3, the
// last v6, which Dat's discovery-channel used) speaks it. Every message is
// a plain DNS message over UDP (IPv4; the package opens only udp4 sockets
// and no TCP):
//
//   - A name is ID.DOMAIN. Dat's ID is hex(discovery key)[0:40] (see DNSID);
//     DOMAIN is "dat.local" for Dat (the package's own default is
//     "dns-discovery.local"). The package's servers take the last two labels
//     of a name as its domain, so a DOMAIN must have exactly two labels for
//     them.
//   - A TXT string is "key=value" (a string without '=' means key=true); the
//     value decides, the last key wins.
//   - Probe: a TXT question for DOMAIN itself. The answer (a TXT record named
//     as asked, TTL 0) holds "token=T", "host=H", "port=P": the client's
//     source address as the server saw it, and T =
//     base64(sha256(secret || H)) with standard padding, where secret is 32
//     random bytes that rotate every 5 minutes; the current and the previous
//     secret are accepted, so a token lives 5 to 10 minutes.
//   - Lookup, announce, unannounce: a TXT question for ID.DOMAIN with an
//     additional TXT record of the same name carrying "token=T" and one of
//     "announce=PORT", "unannounce=PORT" (PORT is 1 to 5 digits; 0 means
//     the message's source port: the package's impliedPort) plus
//     "subscribe=true" to subscribe to pushes. A record without a valid
//     token for the source IP changes nothing; one with a valid token but
//     no (truthy) subscribe key cancels that source's subscription. The
//     server answers the questions first and only then applies the records,
//     so an announce's own answer does not list the announcer.
//   - The answer to a TXT question for ID.DOMAIN is one TXT record holding
//     "token=T" and, when peers are known, "peers=B": B is standard base64
//     of 6 bytes per peer (IPv4, then port big-endian), a random sample.
//     Peer 0.0.0.0 means the answering server's own address. A and SRV
//     questions for ID.DOMAIN are answered with up to 10 A or SRV records.
//   - Push: when a server stores a new announce it sends a DNS query (RD set,
//     no question) to up to 16 random subscribers of the ID, with one
//     additional SRV record ID.DOMAIN (priority 0, weight 0, the peer's port,
//     target the peer's IPv4 address written as a name); the subscriber
//     acknowledges with an empty response, and the server resends twice
//     (after 0.5 s and 1.5 s) without one.
//   - Responses carry the query's ID and questions, the QR flag and no other
//     flag. Clients match responses by ID alone.
const (
	// DNSDefaultDomain is the domain Dat's clients use (dat-swarm-defaults).
	DNSDefaultDomain = "dat.local"

	// dnsIDLen is the length of Dat's IDs: discovery-channel truncates the
	// key to 20 bytes, so that the name fits the DHT's infohashes too.
	dnsIDLen = 40
	// dnsMaxTXTPeers caps the peers in one TXT answer: a TXT string holds
	// at most 255 bytes, and "peers=" plus base64 of 31 peers is 254.
	// dns-discovery samples 100 and writes the length byte modulo 256,
	// which no client can parse once an ID has more than 31 peers.
	dnsMaxTXTPeers = 31
	// dnsMaxRecordPeers is how many A or SRV records answer one question,
	// as in dns-discovery.
	dnsMaxRecordPeers = 10
	// dnsMaxPushes is how many subscribers one new announce is pushed to,
	// as in dns-discovery.
	dnsMaxPushes = 16
	// dnsSecretRotation is how often a server replaces its token secret, as
	// in dns-discovery.
	dnsSecretRotation = 5 * time.Minute
	// dnsTokenMaxAge is how long a client reuses a token without a new
	// probe. A token is valid for at least one rotation period after it is
	// issued; a minute less leaves room for delays. Every answer carries a
	// fresh token anyway, so a client that talks to a server every minute
	// never probes again.
	dnsTokenMaxAge = dnsSecretRotation - time.Minute
)

// DNSID returns the dns-discovery ID of an archive: the first 40 hex
// characters of its discovery key, as Dat's discovery-channel made it.
func DNSID(discoveryKey []byte) string {
	s := hex.EncodeToString(discoveryKey)
	if len(s) > dnsIDLen {
		s = s[:dnsIDLen]
	}
	return s
}

// dnsCheckID validates an ID as the first label of a name and returns it
// lowercased (DNS names compare without case; Dat's IDs are lowercase hex).
// The servers accept any ID; the client sends only what is one plain label.
func dnsCheckID(id string) (string, error) {
	if len(id) == 0 || len(id) > 63 {
		return "", fmt.Errorf("discovery: dns: invalid id %q: want 1 to 63 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return "", fmt.Errorf("discovery: dns: invalid id %q: want letters, digits, '-' or '_'", id)
		}
	}
	return strings.ToLower(id), nil
}

// dnsCanonicalDomain lowercases a domain and drops its dots at either end.
// Its labels must be plain (letters, digits, '-', '_'): names are compared
// as text, so escapes would never match.
func dnsCanonicalDomain(domain string) (string, error) {
	d := strings.ToLower(strings.Trim(domain, "."))
	if d == "" {
		d = DNSDefaultDomain
	}
	if len(d) > 253-64 { // room for an ID label in a 253-character name
		return "", fmt.Errorf("discovery: dns: invalid domain %q: too long", domain)
	}
	for _, label := range strings.Split(d, ".") {
		if _, err := dnsCheckID(label); err != nil {
			return "", fmt.Errorf("discovery: dns: invalid domain %q", domain)
		}
	}
	return d, nil
}

// dnsSplitName returns the ID of a name under domain (canonical), whether
// the name is the domain itself, and whether it is in the domain at all.
func dnsSplitName(name, domain string) (id string, apex, ok bool) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if n == domain {
		return "", true, true
	}
	if len(n) > len(domain)+1 && strings.HasSuffix(n, domain) && n[len(n)-len(domain)-1] == '.' {
		return n[:len(n)-len(domain)-1], false, true
	}
	return "", false, false
}

// dnsTXTValue is one decoded TXT key: dns-discovery's decoder gives a
// string without '=' the value true, which matters where it tests a key for
// truth (subscribe) and never equals a string it compares with (token).
type dnsTXTValue struct {
	val  string
	bare bool // no '=': JavaScript's true
}

// truthy is JavaScript's truth of the value: true, or a non-empty string.
func (v dnsTXTValue) truthy() bool { return v.bare || v.val != "" }

// dnsDecodeTXT decodes the strings of a TXT record as dns-discovery's
// decodeTxt does. miekg/dns hands TXT strings over escaped (\" \\ \DDD),
// so they are unescaped first.
func dnsDecodeTXT(txt []string) map[string]dnsTXTValue {
	data := make(map[string]dnsTXTValue, len(txt))
	for _, s := range txt {
		s = dnsTXTUnescape(s)
		if k, v, ok := strings.Cut(s, "="); ok {
			data[k] = dnsTXTValue{val: v}
		} else {
			data[s] = dnsTXTValue{bare: true}
		}
	}
	return data
}

// dnsEncodeTXT makes TXT strings from key=value pairs in order, escaped
// for miekg/dns (which reads a backslash as the start of an escape).
func dnsEncodeTXT(kv ...string) []string {
	out := make([]string, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, strings.ReplaceAll(kv[i]+"="+kv[i+1], `\`, `\\`))
	}
	return out
}

// dnsTXTUnescape reverses miekg/dns's escaping of TXT strings: \DDD is a
// byte in decimal, \X is X.
func dnsTXTUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		if i+2 < len(s) && dnsIsDigit(s[i]) && dnsIsDigit(s[i+1]) && dnsIsDigit(s[i+2]) {
			n := int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0')
			b.WriteByte(byte(n))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func dnsIsDigit(c byte) bool { return c >= '0' && c <= '9' }

// dnsParsePort parses a port as dns-discovery does (/^\d{1,5}$/); it also
// refuses values over 65535, which the package would store and then fail
// to encode.
func dnsParsePort(v dnsTXTValue) (uint16, bool) {
	if v.bare || len(v.val) == 0 || len(v.val) > 5 {
		return 0, false
	}
	for i := 0; i < len(v.val); i++ {
		if !dnsIsDigit(v.val[i]) {
			return 0, false
		}
	}
	n, err := strconv.Atoi(v.val)
	if err != nil || n > 0xffff {
		return 0, false
	}
	return uint16(n), true
}

// dnsNodeBase64 decodes base64 as Node's Buffer.from(s, 'base64') does,
// which dns-discovery uses: both alphabets, padding optional, the first '='
// ends the data, other characters are skipped, and leftover bits are
// dropped.
func dnsNodeBase64(s string) []byte {
	clean := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		case c == '-':
			clean = append(clean, '+')
		case c == '_':
			clean = append(clean, '/')
		case c == '=':
			i = len(s)
		}
	}
	if len(clean)%4 == 1 { // a lone sextet holds no whole byte
		clean = clean[:len(clean)-1]
	}
	raw := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(raw, clean) // not strict: leftover bits pass
	if err != nil {
		return nil // cannot happen with the alphabet filtered
	}
	return raw[:n]
}

// dnsEncodePeers packs IPv4 peers as 6 bytes each: the address, then the
// port big-endian. Non-IPv4 peers cannot be written and are skipped.
func dnsEncodePeers(peers []netip.AddrPort) []byte {
	buf := make([]byte, 0, 6*len(peers))
	for _, p := range peers {
		a := p.Addr().Unmap()
		if !a.Is4() {
			continue
		}
		ip := a.As4()
		buf = append(buf, ip[:]...)
		buf = binary.BigEndian.AppendUint16(buf, p.Port())
	}
	return buf
}

// dnsDecodePeersTXT decodes the value of a peers= key. A trailing partial
// record is ignored; peer 0.0.0.0 means server (the address the answer
// came from), as in dns-discovery; port 0 and duplicates are dropped, since
// nobody can connect to them.
func dnsDecodePeersTXT(value string, server netip.Addr) []netip.AddrPort {
	raw := dnsNodeBase64(value)
	var peers []netip.AddrPort
	seen := make(map[netip.AddrPort]struct{})
	for off := 0; off+6 <= len(raw); off += 6 {
		ip := netip.AddrFrom4([4]byte(raw[off : off+4]))
		port := binary.BigEndian.Uint16(raw[off+4 : off+6])
		if ip.IsUnspecified() {
			if !server.IsValid() {
				continue
			}
			ip = server.Unmap()
		}
		p := netip.AddrPortFrom(ip, port)
		if port == 0 {
			continue
		}
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		peers = append(peers, p)
	}
	return peers
}

// DNSClientOptions configure a DNSClient beyond NewDNSClient's arguments.
type DNSClientOptions struct {
	// Servers are discovery servers as dns-discovery's clients take them:
	// "host:port", "host:port,secondary" (the secondary port is tried when
	// a probe of the first one fails, and kept if it answers) or "host"
	// (ports 5300, then 53).
	Servers []string
	// Domain is the discovery domain; "" means "dat.local".
	Domain string
	// AnnounceInterval is how often an announce is renewed. The default,
	// 60 s plus up to 10 s of jitter, is what Dat's discovery-channel
	// used, so servers tuned for Dat keep our announces as long as theirs.
	AnnounceInterval time.Duration
	// SubscribeInterval is how often a subscription is renewed.
	// dns-discovery's servers drop a subscription 60 s after its last
	// renewal; the default, 30 s, survives one lost renewal.
	SubscribeInterval time.Duration
	// Timeout bounds one query, resends included (a resend after 0.5 s,
	// then after doubling delays, as dns-socket does). Default 7.5 s, as
	// dns-socket.
	Timeout time.Duration
	// Logf receives debug messages; nil drops them.
	Logf func(format string, args ...any)
}

// dnsServerState is what a client knows of one server.
type dnsServerState struct {
	host      string
	port      uint16
	secondary uint16

	addr       netip.AddrPort // resolved host and port; zero until resolved
	resolvedAt time.Time
	token      string
	tokenAt    time.Time
}

// dnsResponse is a response handed from the read loop to a waiting query.
type dnsResponse struct {
	msg  *dns.Msg
	from netip.AddrPort
}

// DNSClient talks to discovery servers from one UDP socket: the servers
// bind tokens to its address and push to it, so every query, renewal and
// push of the client shares it. Close stops every goroutine the client
// started.
type DNSClient struct {
	conn   *net.UDPConn
	domain string
	opts   DNSClientOptions
	logf   func(format string, args ...any)

	// ctx ends when the client closes: every worker watches it.
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	servers    []*dnsServerState
	pending    map[uint16]chan dnsResponse
	subs       map[string]map[*dnsSubscription]struct{}
	announcing map[string]int // "id port" → active Announce calls
	serverIPs  map[netip.Addr]struct{}

	workers sync.WaitGroup // Announce renewers, subscriptions, queries in flight
	reader  sync.WaitGroup // the read loop
}

// NewDNSClient returns a client of the servers ("host:port") for domain
// ("" means "dat.local").
func NewDNSClient(servers []string, domain string) (*DNSClient, error) {
	return NewDNSClientWithOptions(DNSClientOptions{Servers: servers, Domain: domain})
}

// NewDNSClientWithOptions returns a client configured by opts. It opens
// its UDP socket now, on an IPv4 wildcard address, as dns-discovery does:
// the peers format holds IPv4 addresses only.
func NewDNSClientWithOptions(opts DNSClientOptions) (*DNSClient, error) {
	domain, err := dnsCanonicalDomain(opts.Domain)
	if err != nil {
		return nil, err
	}
	if len(opts.Servers) == 0 {
		return nil, errors.New("discovery: dns: no servers")
	}
	var servers []*dnsServerState
	for _, spec := range opts.Servers {
		s, err := dnsParseServer(spec)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	if opts.SubscribeInterval <= 0 {
		opts.SubscribeInterval = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 7500 * time.Millisecond
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return nil, fmt.Errorf("discovery: dns: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &DNSClient{
		conn:       conn,
		domain:     domain,
		opts:       opts,
		logf:       opts.Logf,
		ctx:        ctx,
		cancel:     cancel,
		servers:    servers,
		pending:    make(map[uint16]chan dnsResponse),
		subs:       make(map[string]map[*dnsSubscription]struct{}),
		announcing: make(map[string]int),
		serverIPs:  make(map[netip.Addr]struct{}),
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	c.reader.Add(1)
	go c.readLoop()
	return c, nil
}

// dnsParseServer parses a server as dns-discovery's parseAddr does. IPv6
// literals are refused: the protocol is IPv4 only.
func dnsParseServer(spec string) (*dnsServerState, error) {
	bad := func() (*dnsServerState, error) {
		return nil, fmt.Errorf("discovery: dns: invalid server %q: want host, host:port or host:port,port", spec)
	}
	s := &dnsServerState{}
	hostport, second, hasSecond := strings.Cut(spec, ",")
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		if hasSecond || strings.Contains(hostport, ":") && !strings.HasPrefix(hostport, "[") {
			return bad()
		}
		host, portStr, second = strings.Trim(hostport, "[]"), "5300", "53"
		hasSecond = true
	}
	if host == "" {
		return bad()
	}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.Unmap().Is4() {
		return nil, fmt.Errorf("discovery: dns: invalid server %q: dns-discovery speaks IPv4 only", spec)
	}
	p, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || p == 0 {
		return bad()
	}
	s.host, s.port = host, uint16(p)
	if hasSecond {
		p, err := strconv.ParseUint(second, 10, 16)
		if err != nil || p == 0 {
			return bad()
		}
		s.secondary = uint16(p)
	}
	return s, nil
}

// LocalAddr is the client's socket address (on the IPv4 wildcard, so its
// port is what matters): servers bind its tokens to the source address of
// its packets and push to it (behind a NAT they see the mapped one).
func (c *DNSClient) LocalAddr() netip.AddrPort {
	return c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close stops the client: Announce calls still running unannounce (one
// packet each, without waiting for answers), subscriptions end and their
// channels close, then the socket closes. It waits for every goroutine.
func (c *DNSClient) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.workers.Wait()
	err := c.conn.Close()
	c.reader.Wait()
	if err != nil {
		return fmt.Errorf("discovery: dns: %w", err)
	}
	return nil
}

// dnsClosedError is the error of a call on a closed client.
type dnsClosedError struct{}

func (dnsClosedError) Error() string { return "discovery: dns: client closed" }

// fanOut runs fn for every server at once and waits for them all. Close
// waits for these goroutines too, and ends their context.
func (c *DNSClient) fanOut(ctx context.Context, fn func(ctx context.Context, i int)) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return dnsClosedError{}
	}
	c.workers.Add(len(c.servers))
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	var wg sync.WaitGroup
	for i := range c.servers {
		wg.Add(1)
		go func() {
			defer c.workers.Done()
			defer wg.Done()
			fn(ctx, i)
		}()
	}
	wg.Wait()
	return nil
}

// readLoop hands responses to the queries waiting for them and pushes to
// the subscriptions. It ends when Close closes the socket.
func (c *DNSClient) readLoop() {
	defer c.reader.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.logf("discovery: dns: read: %v", err)
			select {
			case <-c.ctx.Done():
			case <-time.After(10 * time.Millisecond): // no busy loop on a lasting error
			}
			continue
		}
		c.handlePacket(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// handlePacket handles one packet that reached the client's socket.
func (c *DNSClient) handlePacket(pkt []byte, from netip.AddrPort) {
	var m dns.Msg
	if err := m.Unpack(pkt); err != nil {
		return
	}
	if m.Response {
		c.mu.Lock()
		ch := c.pending[m.Id]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- dnsResponse{msg: &m, from: from}:
			default: // a duplicate: the first one counts
			}
		}
		return
	}
	// A query is a push. Only servers we talked to may push: anyone else
	// could otherwise feed us peers, or use us to reflect packets.
	c.mu.Lock()
	_, known := c.serverIPs[from.Addr()]
	c.mu.Unlock()
	if !known {
		return
	}
	for _, rr := range append(m.Answer[:len(m.Answer):len(m.Answer)], m.Extra...) {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		id, _, ok := dnsSplitName(srv.Hdr.Name, c.domain)
		if !ok || id == "" {
			continue
		}
		ip, err := netip.ParseAddr(strings.TrimSuffix(srv.Target, "."))
		if err != nil || !ip.Is4() {
			continue // dns-discovery takes dotted IPv4 targets only
		}
		if ip.IsUnspecified() {
			ip = from.Addr()
		}
		port := srv.Port
		if port == 0 {
			port = from.Port() // as dns-discovery does
		}
		c.deliver(id, netip.AddrPortFrom(ip, port))
	}
	// Acknowledge, as dns-socket does, so the server stops resending.
	ack := new(dns.Msg)
	ack.Id = m.Id
	ack.Response = true
	ack.Question = m.Question
	if out, err := ack.Pack(); err == nil {
		_, _ = c.conn.WriteToUDPAddrPort(out, from)
	}
}

// deliver hands a pushed peer to the subscriptions of id, without blocking
// the read loop: a subscription whose buffer is full misses it.
func (c *DNSClient) deliver(id string, p netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for sub := range c.subs[id] {
		select {
		case sub.in <- p:
		default:
			c.logf("discovery: dns: subscription %s: buffer full, dropped %v", id, p)
		}
	}
}

// isSubscribed tells whether a subscription to id is active: every query
// for id must then ask to stay subscribed, since a server drops the
// subscription of a source whose valid record lacks subscribe=true.
func (c *DNSClient) isSubscribed(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs[id]) > 0
}

// resolve returns server i's address for port, resolving its host at most
// once a minute, and remembers the IP as one that may push to us.
func (c *DNSClient) resolve(ctx context.Context, i int, port uint16) (netip.AddrPort, error) {
	c.mu.Lock()
	s := c.servers[i]
	host := s.host
	if s.addr.IsValid() && time.Since(s.resolvedAt) < time.Minute {
		a := netip.AddrPortFrom(s.addr.Addr(), port)
		c.mu.Unlock()
		return a, nil
	}
	c.mu.Unlock()
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("discovery: dns: resolve %s: %w", host, err)
		}
		if len(ips) == 0 {
			return netip.AddrPort{}, fmt.Errorf("discovery: dns: resolve %s: no IPv4 address", host)
		}
		ip = ips[0]
	}
	ip = ip.Unmap()
	c.mu.Lock()
	s.addr = netip.AddrPortFrom(ip, port)
	s.resolvedAt = time.Now()
	if len(c.serverIPs) >= 256 { // hosts whose addresses keep changing
		clear(c.serverIPs)
	}
	c.serverIPs[ip] = struct{}{}
	c.mu.Unlock()
	return netip.AddrPortFrom(ip, port), nil
}

// newQueryID reserves an unused, non-zero message ID (dns-socket ignores
// responses with ID 0) and the channel its response arrives on.
func (c *DNSClient) newQueryID() (uint16, chan dnsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, nil, dnsClosedError{}
	}
	if len(c.pending) >= 60000 {
		return 0, nil, errors.New("discovery: dns: too many queries in flight")
	}
	for {
		id := uint16(rand.IntN(0xffff) + 1)
		if _, used := c.pending[id]; !used {
			ch := make(chan dnsResponse, 1)
			c.pending[id] = ch
			return id, ch, nil
		}
	}
}

// exchange sends m to addr and waits for its response, resending after
// 0.5 s and then after doubling delays, until the client's timeout, ctx's
// end or Close. The first send happens even if ctx is already done.
func (c *DNSClient) exchange(ctx context.Context, addr netip.AddrPort, m *dns.Msg) (dnsResponse, error) {
	id, ch, err := c.newQueryID()
	if err != nil {
		return dnsResponse{}, err
	}
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	m.Id = id
	pkt, err := m.Pack()
	if err != nil {
		return dnsResponse{}, fmt.Errorf("discovery: dns: pack: %w", err)
	}
	send := func() error {
		if _, err := c.conn.WriteToUDPAddrPort(pkt, addr); err != nil {
			return fmt.Errorf("discovery: dns: send to %v: %w", addr, err)
		}
		return nil
	}
	if err := send(); err != nil {
		return dnsResponse{}, err
	}
	deadline := time.NewTimer(c.opts.Timeout)
	defer deadline.Stop()
	delay := 500 * time.Millisecond
	resend := time.NewTimer(delay)
	defer resend.Stop()
	for {
		select {
		case r := <-ch:
			return r, nil
		case <-resend.C:
			_ = send() // a failed resend is as good as a lost one
			delay *= 2
			resend.Reset(delay)
		case <-deadline.C:
			return dnsResponse{}, fmt.Errorf("discovery: dns: %v: query timed out", addr)
		case <-ctx.Done():
			return dnsResponse{}, fmt.Errorf("discovery: dns: %v: %w", addr, ctx.Err())
		case <-c.ctx.Done():
			return dnsResponse{}, dnsClosedError{}
		}
	}
}

// firstTXT decodes the first answer, if it is a TXT record: dns-discovery
// reads answers[0] only.
func dnsFirstTXT(m *dns.Msg) map[string]dnsTXTValue {
	if len(m.Answer) == 0 {
		return nil
	}
	txt, ok := m.Answer[0].(*dns.TXT)
	if !ok {
		return nil
	}
	return dnsDecodeTXT(txt.Txt)
}

// dnsProbeResult is what a probe tells: a token, and our address as the
// server saw it.
type dnsProbeResult struct {
	server netip.AddrPort // who answered
	token  string
	me     netip.AddrPort // zero when the server did not say
}

// probe asks server i for a token, trying its secondary port (and keeping
// it) when the first one does not answer, as dns-discovery does.
func (c *DNSClient) probe(ctx context.Context, i int) (dnsProbeResult, error) {
	c.mu.Lock()
	port, secondary := c.servers[i].port, c.servers[i].secondary
	c.mu.Unlock()
	res, err := c.probePort(ctx, i, port)
	if err == nil || secondary == 0 || ctx.Err() != nil {
		return res, err
	}
	res, err2 := c.probePort(ctx, i, secondary)
	if err2 != nil {
		return res, err
	}
	c.mu.Lock()
	c.servers[i].port = secondary
	c.servers[i].secondary = 0
	if c.servers[i].addr.IsValid() {
		c.servers[i].addr = netip.AddrPortFrom(c.servers[i].addr.Addr(), secondary)
	}
	c.mu.Unlock()
	return res, nil
}

func (c *DNSClient) probePort(ctx context.Context, i int, port uint16) (dnsProbeResult, error) {
	addr, err := c.resolve(ctx, i, port)
	if err != nil {
		return dnsProbeResult{}, err
	}
	m := new(dns.Msg)
	m.RecursionDesired = true
	m.Question = []dns.Question{{Name: c.domain + ".", Qtype: dns.TypeTXT, Qclass: dns.ClassINET}}
	r, err := c.exchange(ctx, addr, m)
	if err != nil {
		return dnsProbeResult{}, err
	}
	data := dnsFirstTXT(r.msg)
	tok, ok := data["token"]
	if !ok || tok.bare || tok.val == "" {
		return dnsProbeResult{}, fmt.Errorf("discovery: dns: %v: probe answer has no token", addr)
	}
	c.setToken(i, tok.val)
	res := dnsProbeResult{server: r.from, token: tok.val}
	if h, ok := data["host"]; ok && !h.bare {
		ip, err1 := netip.ParseAddr(h.val)
		p, ok := dnsParsePort(data["port"])
		if err1 == nil && ip.Is4() && ok { // dns-discovery's whoami wants both
			res.me = netip.AddrPortFrom(ip, p)
		}
	}
	return res, nil
}

func (c *DNSClient) setToken(i int, tok string) {
	c.mu.Lock()
	c.servers[i].token = tok
	c.servers[i].tokenAt = time.Now()
	c.mu.Unlock()
}

// token returns server i's token, probing for one when the one we hold is
// missing or old.
func (c *DNSClient) token(ctx context.Context, i int) (string, error) {
	c.mu.Lock()
	tok, at := c.servers[i].token, c.servers[i].tokenAt
	c.mu.Unlock()
	if tok != "" && time.Since(at) < dnsTokenMaxAge {
		return tok, nil
	}
	res, err := c.probe(ctx, i)
	if err != nil {
		return "", err
	}
	return res.token, nil
}

// dnsOp is what a query for an ID does.
type dnsOp int

const (
	dnsLookup dnsOp = iota
	dnsAnnounce
	dnsUnannounce
)

func (op dnsOp) String() string {
	return [...]string{"lookup", "announce", "unannounce"}[op]
}

// queryMsg builds the query of op for id: a TXT question for ID.DOMAIN and,
// when we hold a token, the additional TXT record, in dns-discovery's key
// order.
func (c *DNSClient) queryMsg(op dnsOp, id string, port uint16, token string, subscribe bool) *dns.Msg {
	name := id + "." + c.domain + "."
	m := new(dns.Msg)
	m.RecursionDesired = true // dns-socket's default flags
	m.Question = []dns.Question{{Name: name, Qtype: dns.TypeTXT, Qclass: dns.ClassINET}}
	if token == "" {
		return m // a lookup without a token: the answer still lists peers
	}
	var kv []string
	if subscribe {
		kv = append(kv, "subscribe", "true")
	}
	kv = append(kv, "token", token)
	switch op {
	case dnsAnnounce:
		kv = append(kv, "announce", strconv.Itoa(int(port)))
	case dnsUnannounce:
		kv = append(kv, "unannounce", strconv.Itoa(int(port)))
	}
	m.Extra = []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
		Txt: dnsEncodeTXT(kv...),
	}}
	return m
}

// queryServer runs op for id on server i and returns the peers its answer
// lists. Announces, unannounces and subscribing lookups need a token, so
// they probe first when we hold none. When the answer brings a token other
// than the one we sent, ours may have been refused (the server restarted,
// or it is older than two rotations) and the record was ignored, so an
// announce or subscription is sent once more with the new token.
func (c *DNSClient) queryServer(ctx context.Context, i int, op dnsOp, id string, port uint16, subscribe bool) ([]netip.AddrPort, error) {
	needToken := op != dnsLookup || subscribe
	var tok string
	if needToken {
		var err error
		if tok, err = c.token(ctx, i); err != nil {
			return nil, err
		}
	} else {
		c.mu.Lock()
		if time.Since(c.servers[i].tokenAt) < dnsTokenMaxAge {
			tok = c.servers[i].token
		}
		c.mu.Unlock()
	}
	var peers []netip.AddrPort
	for attempt := 0; attempt < 2; attempt++ {
		c.mu.Lock()
		p := c.servers[i].port
		c.mu.Unlock()
		addr, err := c.resolve(ctx, i, p)
		if err != nil {
			return nil, err
		}
		r, err := c.exchange(ctx, addr, c.queryMsg(op, id, port, tok, subscribe))
		if err != nil {
			return nil, err
		}
		data := dnsFirstTXT(r.msg)
		if v, ok := data["peers"]; ok && !v.bare {
			peers = append(peers, dnsDecodePeersTXT(v.val, r.from.Addr())...)
		}
		nt, ok := data["token"]
		if !ok || nt.bare || nt.val == "" {
			break
		}
		c.setToken(i, nt.val)
		if nt.val == tok || !needToken || op == dnsUnannounce {
			break
		}
		c.logf("discovery: dns: %v gave a new token; sending the %v again", addr, op)
		tok = nt.val
	}
	return peers, nil
}

// visit runs op for id on every server at once and returns the peers they
// list, deduplicated. It fails only when every server failed, as
// dns-discovery does.
func (c *DNSClient) visit(ctx context.Context, op dnsOp, id string, port uint16) ([]netip.AddrPort, error) {
	subscribe := c.isSubscribed(id)
	type result struct {
		peers []netip.AddrPort
		err   error
	}
	results := make([]result, len(c.servers))
	if err := c.fanOut(ctx, func(ctx context.Context, i int) {
		p, err := c.queryServer(ctx, i, op, id, port, subscribe)
		results[i] = result{p, err}
	}); err != nil {
		return nil, err
	}
	var peers []netip.AddrPort
	seen := make(map[netip.AddrPort]struct{})
	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for _, p := range r.peers {
			if _, dup := seen[p]; !dup {
				seen[p] = struct{}{}
				peers = append(peers, p)
			}
		}
	}
	if len(errs) == len(results) {
		return nil, fmt.Errorf("discovery: dns: %v %s: %w", op, id, errors.Join(errs...))
	}
	for _, err := range errs {
		c.logf("discovery: dns: %v %s: %v", op, id, err)
	}
	return peers, nil
}

// sendOnce sends op for id to every server once without waiting for
// answers: how a closing client unannounces and unsubscribes. It uses only
// addresses and tokens it already holds.
func (c *DNSClient) sendOnce(op dnsOp, id string, port uint16, subscribe bool) {
	c.mu.Lock()
	type target struct {
		addr  netip.AddrPort
		token string
	}
	var targets []target
	for _, s := range c.servers {
		if s.addr.IsValid() && s.token != "" && time.Since(s.tokenAt) < dnsTokenMaxAge {
			targets = append(targets, target{s.addr, s.token})
		}
	}
	c.mu.Unlock()
	for _, t := range targets {
		m := c.queryMsg(op, id, port, t.token, subscribe)
		m.Id = uint16(rand.IntN(0xffff) + 1)
		if pkt, err := m.Pack(); err == nil {
			_, _ = c.conn.WriteToUDPAddrPort(pkt, t.addr)
		}
	}
}

// Announce announces (id, port) on every server now and then renews it in
// the background, before servers drop it, until ctx is done or the client
// closes; then it unannounces. It returns once the first round is done:
// with an error (and nothing left running) when no server answered, or
// when id or port is invalid. Port 0 means "the source port of my packets"
// (dns-discovery's impliedPort): a server stores the port it sees, which is
// the NAT's mapping of the client's socket. id is an ID as DNSID makes it.
func (c *DNSClient) Announce(ctx context.Context, id string, port int) error {
	id, err := dnsCheckID(id)
	if err != nil {
		return err
	}
	if port < 0 || port > 0xffff {
		return fmt.Errorf("discovery: dns: announce %s: invalid port %d", id, port)
	}
	key := id + " " + strconv.Itoa(port)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return dnsClosedError{}
	}
	c.announcing[key]++
	c.workers.Add(1)
	c.mu.Unlock()
	if _, err := c.visit(ctx, dnsAnnounce, id, uint16(port)); err != nil {
		c.endAnnounce(key)
		c.workers.Done()
		return err
	}
	go c.keepAnnouncing(ctx, id, uint16(port), key)
	return nil
}

// endAnnounce drops one Announce call of key and tells whether it was the
// last, so that unannouncing does not undo another call's announce.
func (c *DNSClient) endAnnounce(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.announcing[key]--
	if c.announcing[key] > 0 {
		return false
	}
	delete(c.announcing, key)
	return true
}

func (c *DNSClient) announceDelay() time.Duration {
	if c.opts.AnnounceInterval > 0 {
		return c.opts.AnnounceInterval
	}
	return 60*time.Second + rand.N(10*time.Second)
}

// keepAnnouncing renews an announce until ctx is done or the client
// closes, then unannounces.
func (c *DNSClient) keepAnnouncing(ctx context.Context, id string, port uint16, key string) {
	defer c.workers.Done()
	t := time.NewTimer(c.announceDelay())
	defer t.Stop()
	run, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	for {
		select {
		case <-run.Done():
			if !c.endAnnounce(key) {
				return
			}
			// Wait for the answers (resending once), unless Close comes:
			// then one packet each, without waiting.
			uctx, ucancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			_, err := c.visit(uctx, dnsUnannounce, id, port)
			ucancel()
			if errors.As(err, new(dnsClosedError)) {
				c.sendOnce(dnsUnannounce, id, port, c.isSubscribed(id))
			} else if err != nil {
				c.logf("%v", err)
			}
			return
		case <-t.C:
			if _, err := c.visit(run, dnsAnnounce, id, port); err != nil && run.Err() == nil {
				c.logf("%v", err)
			}
			t.Reset(c.announceDelay())
		}
	}
}

// Lookup asks every server for the peers of id and returns them
// deduplicated. It fails only when every server failed.
func (c *DNSClient) Lookup(ctx context.Context, id string) ([]netip.AddrPort, error) {
	id, err := dnsCheckID(id)
	if err != nil {
		return nil, err
	}
	return c.visit(ctx, dnsLookup, id, 0)
}

// dnsSubscription is one Subscribe call: pushes for its ID arrive on in.
type dnsSubscription struct {
	in chan netip.AddrPort
}

// Subscribe asks the servers to push new announces of id to this client,
// and delivers peers on the returned channel: first those a lookup finds,
// then the pushed ones and those later renewals find, each peer once. The
// subscription is renewed every SubscribeInterval; the channel closes when
// ctx is done or the client closes. A consumer that falls more than 256
// peers behind misses pushes. It fails when no server answered the first
// lookup.
func (c *DNSClient) Subscribe(ctx context.Context, id string) (<-chan netip.AddrPort, error) {
	id, err := dnsCheckID(id)
	if err != nil {
		return nil, err
	}
	sub := &dnsSubscription{in: make(chan netip.AddrPort, 256)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, dnsClosedError{}
	}
	if c.subs[id] == nil {
		c.subs[id] = make(map[*dnsSubscription]struct{})
	}
	c.subs[id][sub] = struct{}{}
	c.workers.Add(1)
	c.mu.Unlock()
	peers, err := c.visit(ctx, dnsLookup, id, 0)
	if err != nil {
		c.unsubscribe(id, sub)
		c.workers.Done()
		return nil, err
	}
	out := make(chan netip.AddrPort)
	go c.runSubscription(ctx, id, sub, peers, out)
	return out, nil
}

// unsubscribe removes sub and tells whether it was id's last subscription.
func (c *DNSClient) unsubscribe(id string, sub *dnsSubscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.subs[id], sub)
	if len(c.subs[id]) > 0 {
		return false
	}
	delete(c.subs, id)
	return true
}

// runSubscription delivers a subscription's peers and renews it. It owns
// out and at most one renewal goroutine, which it waits for.
func (c *DNSClient) runSubscription(ctx context.Context, id string, sub *dnsSubscription, initial []netip.AddrPort, out chan<- netip.AddrPort) {
	defer c.workers.Done()
	defer close(out)
	run, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	var renewals sync.WaitGroup
	defer func() {
		cancel()
		stop()
		renewals.Wait()
		if c.unsubscribe(id, sub) {
			// Without subscribe=true, a record cancels our subscription,
			// so servers stop pushing now rather than in a minute.
			c.sendOnce(dnsLookup, id, 0, false)
		}
	}()

	const maxSeen = 4096
	seen := make(map[netip.AddrPort]struct{})
	var queue []netip.AddrPort
	add := func(p netip.AddrPort) {
		if _, dup := seen[p]; dup {
			return
		}
		if len(seen) >= maxSeen {
			clear(seen) // bounded: a peer may come again after this
		}
		seen[p] = struct{}{}
		if len(queue) < maxSeen {
			queue = append(queue, p)
		}
	}
	for _, p := range initial {
		add(p)
	}
	ticker := time.NewTicker(c.opts.SubscribeInterval)
	defer ticker.Stop()
	renewed := make(chan []netip.AddrPort, 1)
	renewing := false
	for {
		var send chan<- netip.AddrPort
		var next netip.AddrPort
		if len(queue) > 0 {
			send, next = out, queue[0]
		}
		select {
		case <-run.Done():
			return
		case p := <-sub.in:
			add(p)
		case send <- next:
			queue = queue[1:]
		case <-ticker.C:
			if renewing {
				continue
			}
			renewing = true
			renewals.Add(1)
			go func() {
				defer renewals.Done()
				peers, err := c.visit(run, dnsLookup, id, 0)
				if err != nil && run.Err() == nil {
					c.logf("%v", err)
				}
				renewed <- peers
			}()
		case peers := <-renewed:
			renewing = false
			for _, p := range peers {
				add(p)
			}
		}
	}
}

// Whoami probes every server and returns this client's public address as
// they see it, as dns-discovery's whoami does: when two servers at
// different addresses agree on host and port, the port is kept; when they
// agree on the host only (a NAT that maps per destination), or only one
// server answered, the port is 0; when they disagree on the host, it
// fails. (dns-discovery also requires the two servers' hosts to differ;
// here their ports may differ instead.)
func (c *DNSClient) Whoami(ctx context.Context) (netip.AddrPort, error) {
	results := make([]dnsProbeResult, len(c.servers))
	errs := make([]error, len(c.servers))
	if err := c.fanOut(ctx, func(ctx context.Context, i int) {
		results[i], errs[i] = c.probe(ctx, i)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	var first *dnsProbeResult
	for i := range results {
		r := &results[i]
		if errs[i] != nil || !r.me.IsValid() {
			continue
		}
		if first == nil {
			first = r
			continue
		}
		if r.server == first.server {
			continue
		}
		switch {
		case r.me == first.me:
			return r.me, nil
		case r.me.Addr() == first.me.Addr():
			return netip.AddrPortFrom(r.me.Addr(), 0), nil
		default:
			return netip.AddrPort{}, fmt.Errorf("discovery: dns: whoami: servers disagree: %v and %v", first.me, r.me)
		}
	}
	if first != nil {
		return netip.AddrPortFrom(first.me.Addr(), 0), nil
	}
	return netip.AddrPort{}, fmt.Errorf("discovery: dns: whoami: probe failed: %w", errors.Join(errs...))
}
