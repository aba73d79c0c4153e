package devserver

// mDNS advertising of the dev server.
//
// Why not mdns.NewServer: github.com/hashicorp/mdns generates the records
// here (MDNSService.Records), but its Server cannot be used to answer. It
// always answers by unicast to the source address of the query (see its
// sendResponse: "TODO: Respect the unicast argument"), whereas real mDNS
// queriers (Apple's mDNSResponder, Android, Avahi, the npm multicast-dns
// package) query from port 5353 and listen for answers on 224.0.0.251:5353,
// per RFC 6762. Where several programs share port 5353 on the querier's
// machine, a unicast datagram to that port reaches only one of them, and
// some queriers ignore unicast answers altogether. It also never announces
// nor says goodbye, so browsers learn of the site only when they ask and
// keep listing it for up to two minutes after it stopped.
//
// So the Advertiser runs its own responder on one UDP socket on port 5353,
// joined to the group on each LAN interface. net.ListenMulticastUDP binds
// it to 0.0.0.0:5353 with SO_REUSEADDR, so it shares the port with any
// other mDNS implementation on this machine (Avahi, mDNSResponder, a
// browser's); golang.org/x/net/ipv4 joins the other interfaces, turns
// multicast loopback back on and tells which interface each query came in
// on. The responder:
//
//   - answers queries from port 5353 by multicast to 224.0.0.251:5353 on the
//     interface the query came in on, with that interface's addresses;
//   - answers questions with the QU (unicast-response) bit set by unicast
//     to the querier, unless it has not multicast its records on that
//     interface within the last quarter of their TTL (RFC 6762 §5.4), in
//     which case it multicasts;
//   - answers legacy unicast queries (source port other than 5353, as sent
//     by plain DNS resolvers pointed at 224.0.0.251 and by hashicorp/mdns's
//     own client) by unicast to the querier's address and port, echoing the
//     query ID and question, TTLs capped at 10 s and no cache-flush bits
//     (RFC 6762 §6.7);
//   - sends two unsolicited announcements one second apart at start (RFC
//     6762 §8.3) and goodbyes (the same records with TTL 0, §10.1) at Close.
//
// Multicast loopback is on, so queriers on this same machine (Avahi,
// mDNSResponder, a browser's own resolver) hear the answers too.
//
// Answers follow RFC 6762/6763 closely enough for the implementations above:
// the records that answer a question go in the Answer section and the rest
// (SRV, TXT, A/AAAA for a PTR question; the other address family for an
// address question) in the Additional section; SRV, TXT, A, AAAA and NSEC
// are marked cache-flush (unique) in multicast answers; known answers in a
// query suppress the same records in the answer (§7.1); a host with no IPv6
// address asserts so with an NSEC record (§6.1), so phones do not wait for
// an AAAA answer. Names are matched case-insensitively.
//
// Not done: probing for conflicts before announcing (§8.1) and renaming on
// conflict (two dev servers with the same title on one LAN clash), the
// 20–120 ms random delay before answering shared records (§6), per-record
// rate limiting, IPv6 multicast (ff02::fb; AAAA records for global IPv6
// addresses are still served over IPv4), and following interface or
// address changes after Advertise (Close and Advertise again). And a
// caveat of sharing port 5353: the kernel hands a unicast datagram to port
// 5353 to one of the sockets sharing it (on Linux the last bound), so while
// an Advertiser runs, unicast answers meant for another mDNS querier on
// this machine (to questions it sent with the QU bit) may reach our socket,
// which drops them; multicast is delivered to every socket.

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// MDNSOptions configure an Advertiser.
type MDNSOptions struct {
	Name     string         // host label without ".local" (e.g. "my-site"); see MDNSName. Empty: MDNSName(Instance).
	Instance string         // DNS-SD instance name, e.g. the site title "Ann's Blog". Empty: Name.
	Port     int            // the dev server's HTTP port
	IPs      []net.IP       // the LAN addresses to announce (from LANAddrs). Empty: those of LANAddrs().
	Iface    *net.Interface // optional: only this interface
}

const (
	mdnsPort          = 5353
	mdnsService       = "_http._tcp"
	mdnsDomain        = "local."
	mdnsTTL           = 120 // what hashicorp/mdns puts on every record
	mdnsLegacyMaxTTL  = 10  // RFC 6762 §6.7
	mdnsCacheFlushBit = 1 << 15
	mdnsUnicastBit    = 1 << 15
	dnsMaxLabelLength = 63
	mdnsAnnounceCount = 2
	mdnsAnnounceGap   = time.Second
	mdnsMaxPacket     = 9000 // RFC 6762 §17
)

var mdnsGroup = &net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: mdnsPort}

// MDNSName derives a valid host label from a site title: lowercase, a-z0-9
// and '-', at most 63 bytes, no leading/trailing '-', "beaker-dev" if
// nothing is left.
//
// Common accented Latin letters lose their accents ("Café" → "cafe"),
// apostrophes vanish ("Ann's Blog" → "anns-blog") and every other run of
// characters becomes one '-'.
func MDNSName(title string) string {
	var b strings.Builder
	dash := false
	for _, r := range title {
		r = unicode.ToLower(r)
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
		case r == '\'' || r == '’' || r == '`' || r == 'ʼ':
			// "Ann's" reads better as "anns" than as "ann-s".
		default:
			if s, ok := foldLatin(r); ok {
				if dash && b.Len() > 0 {
					b.WriteByte('-')
				}
				dash = false
				b.WriteString(s)
				continue
			}
			dash = true
		}
	}
	name := b.String()
	if len(name) > dnsMaxLabelLength {
		name = strings.TrimRight(name[:dnsMaxLabelLength], "-")
	}
	if name == "" {
		return "beaker-dev"
	}
	return name
}

// latinFolds maps accented lowercase Latin letters to ASCII.
var latinFolds = map[string]string{
	"àáâãäåāăą": "a", "æ": "ae", "çćĉċč": "c", "ďđð": "d",
	"èéêëēĕėęě": "e", "ĝğġģ": "g", "ĥħ": "h", "ìíîïĩīĭįı": "i", "ĵ": "j",
	"ķ": "k", "ĺļľŀł": "l", "ñńņňŉ": "n", "òóôõöøōŏő": "o", "œ": "oe",
	"ŕŗř": "r", "śŝşš": "s", "ß": "ss", "ţťŧ": "t", "þ": "th",
	"ùúûüũūŭůűų": "u", "ŵ": "w", "ýÿŷ": "y", "źżž": "z",
}

func foldLatin(r rune) (string, bool) {
	if r < 0x80 {
		return "", false
	}
	for from, to := range latinFolds {
		if strings.ContainsRune(from, r) {
			return to, true
		}
	}
	return "", false
}

// validHostLabel reports whether s is a host label MDNSName could produce.
func validHostLabel(s string) bool {
	if s == "" || len(s) > dnsMaxLabelLength || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// instanceLabel cleans a site title for use as a DNS-SD instance name: runs
// of white space (including newlines) become one space, control characters
// go, and the result is cut to 63 bytes on a character boundary.
func instanceLabel(title string) string {
	title = strings.ToValidUTF8(title, "")
	title = strings.Join(strings.FieldsFunc(title, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	for len(title) > dnsMaxLabelLength {
		_, size := utf8.DecodeLastRuneInString(title)
		title = strings.TrimRight(title[:len(title)-size], " ")
	}
	return title
}

// presentationLabel returns label (raw bytes, any characters) in the
// escaped text form github.com/miekg/dns uses for names it unpacks (so
// "Ann's Blog" is `Ann\'s\ Blog`), which is how questions about it arrive
// and what hashicorp/mdns compares them with.
func presentationLabel(label string) (string, error) {
	wire := append([]byte{byte(len(label))}, label...)
	wire = append(wire, 0)
	name, _, err := dns.UnpackDomainName(wire, 0)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(name, "."), nil
}

// ifaceZone is one joined interface and the records for its addresses.
type ifaceZone struct {
	ifi  net.Interface
	zone *mdns.MDNSService

	lastMulticast time.Time // guarded by Advertiser.mu
}

// Advertiser answers mDNS queries for one dev server until Close. See the
// comment at the top of mdns.go for how it answers.
type Advertiser struct {
	host     string // "name.local."
	instance string // "<escaped instance>._http._tcp.local."
	service  string // "_http._tcp.local."
	enum     string // "_services._dns-sd._udp.local."

	all    *mdns.MDNSService // all addresses, for queries from unknown interfaces
	ifaces []*ifaceZone      // empty: the system's default multicast interface

	conn *net.UDPConn
	pc   *ipv4.PacketConn

	mu     sync.Mutex // serialises sends; guards closed and lastMulticast
	closed bool

	stop      chan struct{} // closed by Close: stops the announcer
	announced sync.WaitGroup
	reading   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Advertise starts answering mDNS queries for http://NAME.local:PORT/ and
// for the _http._tcp DNS-SD service named opts.Instance, and announces both
// on the LAN. Close it when the dev server stops.
//
// Without opts.Iface it listens on every interface that is up, can
// multicast and has one of opts.IPs, answering on each with the addresses
// of opts.IPs that are on it.
func Advertise(opts MDNSOptions) (*Advertiser, error) {
	if opts.Port <= 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("mdns: invalid port %d", opts.Port)
	}
	instance := instanceLabel(opts.Instance)
	name := opts.Name
	if name == "" {
		name = MDNSName(instance)
	}
	if !validHostLabel(name) {
		return nil, fmt.Errorf("mdns: %q is not a host label (letters, digits and '-', at most 63; see MDNSName)", name)
	}
	name = strings.ToLower(name)
	if instance == "" {
		instance = name
	}
	escaped, err := presentationLabel(instance)
	if err != nil {
		return nil, fmt.Errorf("mdns: instance name %q: %w", instance, err)
	}

	ips := advertisableIPs(opts.IPs)
	if len(ips) == 0 && len(opts.IPs) == 0 {
		addrs, err := LANAddrs()
		if err != nil {
			return nil, fmt.Errorf("mdns: listing LAN addresses: %w", err)
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
		ips = advertisableIPs(ips)
	}
	if len(ips) == 0 {
		return nil, errors.New("mdns: no LAN address to announce")
	}

	a := &Advertiser{
		host:    name + ".local.",
		service: mdnsService + ".local.",
		enum:    "_services._dns-sd._udp.local.",
		stop:    make(chan struct{}),
	}
	newZone := func(ips []net.IP) (*mdns.MDNSService, error) {
		// Explicit host name and addresses: otherwise hashicorp/mdns
		// looks them up from os.Hostname(), which fails in containers.
		return mdns.NewMDNSService(escaped, mdnsService, mdnsDomain, a.host, opts.Port, ips, []string{"path=/"})
	}
	if a.all, err = newZone(ips); err != nil {
		return nil, fmt.Errorf("mdns: %w", err)
	}
	a.instance = escaped + "." + a.service

	var ifis []net.Interface
	if opts.Iface != nil {
		ifis = []net.Interface{*opts.Iface}
	} else {
		ifis = multicastInterfacesWith(ips)
	}

	// One socket for every interface. ListenMulticastUDP binds to port
	// 5353 of the wildcard address with SO_REUSEADDR (so Avahi or
	// mDNSResponder can listen too), joins the group on the first
	// interface and turns multicast loopback off, which we turn back on
	// below.
	var first *net.Interface
	if len(ifis) > 0 {
		first = &ifis[0]
	}
	a.conn, err = net.ListenMulticastUDP("udp4", first, mdnsGroup)
	if err != nil {
		return nil, fmt.Errorf("mdns: listening on %v: %w", mdnsGroup, err)
	}
	a.pc = ipv4.NewPacketConn(a.conn)
	for i, ifi := range ifis {
		if i > 0 {
			if err := a.pc.JoinGroup(&ifis[i], mdnsGroup); err != nil {
				continue // e.g. gone since listed: answer on the others
			}
		}
		zone := a.all
		if sub := ipsOnInterface(ifi, ips); len(sub) > 0 {
			if zone, err = newZone(sub); err != nil {
				a.conn.Close()
				return nil, fmt.Errorf("mdns: %w", err)
			}
		}
		a.ifaces = append(a.ifaces, &ifaceZone{ifi: ifi, zone: zone})
	}
	// Best effort: a platform without these still works, less well.
	_ = a.pc.SetMulticastLoopback(true)
	_ = a.pc.SetMulticastTTL(255) // RFC 6762 §11
	_ = a.pc.SetTTL(255)
	_ = a.pc.SetControlMessage(ipv4.FlagInterface, true)

	a.reading.Add(1)
	go a.readLoop()
	a.announced.Add(1)
	go a.announceLoop()
	return a, nil
}

// Close stops answering: it stops the announcements, multicasts goodbyes
// (the records with TTL 0) so browsers drop the site at once, closes the
// socket and waits for the Advertiser's goroutines to end. Calling it again
// returns the first call's result.
func (a *Advertiser) Close() error {
	a.closeOnce.Do(func() {
		close(a.stop)
		a.announced.Wait()

		a.mu.Lock()
		a.closed = true // from now on the reader sends nothing
		a.announceLocked(0)
		a.mu.Unlock()

		a.closeErr = a.conn.Close()
		a.reading.Wait()
	})
	return a.closeErr
}

// advertisableIPs drops addresses no phone can use: unspecified, multicast and
// IPv6 link-local ones (which would need a zone).
func advertisableIPs(in []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range in {
		if ip == nil || ip.IsUnspecified() || ip.IsMulticast() {
			continue
		}
		if ip.To4() == nil && (ip.IsLinkLocalUnicast() || len(ip) != net.IPv6len) {
			continue
		}
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		}
		out = append(out, ip)
	}
	return out
}

// multicastInterfacesWith lists the interfaces that are up, can multicast
// and have one of ips.
func multicastInterfacesWith(ips []net.IP) []net.Interface {
	all, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []net.Interface
	for _, ifi := range all {
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 {
			continue
		}
		if len(ipsOnInterface(ifi, ips)) > 0 {
			out = append(out, ifi)
		}
	}
	return out
}

// ipsOnInterface returns those of ips that ifi has.
func ipsOnInterface(ifi net.Interface, ips []net.IP) []net.IP {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []net.IP
	for _, ip := range ips {
		for _, addr := range addrs {
			if n, ok := addr.(*net.IPNet); ok && n.IP.Equal(ip) {
				out = append(out, ip)
				break
			}
		}
	}
	return out
}

// zoneFor returns the interface a packet came in on (nil if unknown) and
// the records to answer with there.
func (a *Advertiser) zoneFor(ifIndex int) (*ifaceZone, *mdns.MDNSService) {
	for _, z := range a.ifaces {
		if z.ifi.Index == ifIndex {
			return z, z.zone
		}
	}
	return nil, a.all
}

// readLoop answers queries until the socket is closed.
func (a *Advertiser) readLoop() {
	defer a.reading.Done()
	buf := make([]byte, 65536)
	for {
		n, cm, src, err := a.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select { // a transient error: try again, without spinning
			case <-a.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		from, ok := src.(*net.UDPAddr)
		if !ok {
			continue
		}
		ifIndex := 0
		if cm != nil {
			ifIndex = cm.IfIndex
		}
		a.handlePacket(buf[:n], from, ifIndex)
	}
}

// handlePacket answers one datagram if it is a query we have answers to.
func (a *Advertiser) handlePacket(packet []byte, from *net.UDPAddr, ifIndex int) {
	var query dns.Msg
	if err := query.Unpack(packet); err != nil {
		return
	}
	// RFC 6762 §18: ignore responses, non-zero opcodes and rcodes.
	if query.Response || query.Opcode != dns.OpcodeQuery || query.Rcode != dns.RcodeSuccess {
		return
	}
	iz, zone := a.zoneFor(ifIndex)
	if iz == nil && ifIndex != 0 && len(a.ifaces) > 0 {
		// Delivered from an interface we did not join (Linux hands a
		// group's datagrams to every socket bound to it): not ours.
		return
	}

	legacy := from.Port != mdnsPort
	var multi, uni mdnsResponseRecords
	for _, q := range query.Question {
		ans, extra := a.records(zone, q)
		if len(ans) == 0 && len(extra) == 0 {
			continue
		}
		if !legacy {
			ans = suppressKnownAnswers(ans, query.Answer)
			if len(ans) == 0 {
				continue // the querier already has every answer
			}
		}
		if legacy || q.Qclass&mdnsUnicastBit != 0 {
			uni.add(ans, extra)
		} else {
			multi.add(ans, extra)
		}
	}
	if uni.empty() && multi.empty() {
		return
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	now := time.Now()
	if !uni.empty() && !legacy && (iz == nil || now.Sub(iz.lastMulticast) > mdnsTTL*time.Second/4) {
		// §5.4: QU questions get a multicast answer when the records
		// have not been multicast recently, so every cache is refreshed.
		multi.add(uni.answer, uni.extra)
		uni = mdnsResponseRecords{}
	}
	if !multi.empty() {
		msg := newMDNSResponse(0, multi.answer, multi.extra, true)
		a.sendMulticastLocked(msg, iz)
	}
	if !uni.empty() {
		var msg *dns.Msg
		if legacy {
			msg = newMDNSResponse(query.Id, capLegacyTTL(uni.answer), capLegacyTTL(uni.extra), false)
			for _, q := range query.Question {
				q.Qclass &^= mdnsUnicastBit
				msg.Question = append(msg.Question, q)
			}
		} else {
			msg = newMDNSResponse(0, uni.answer, uni.extra, true)
		}
		if b, err := msg.Pack(); err == nil {
			_, _ = a.pc.WriteTo(b, nil, from)
		}
	}
}

// mdnsResponseRecords collects the Answer and Additional sections of a response
// without duplicates; a record in the answer is not repeated as additional.
type mdnsResponseRecords struct{ answer, extra []dns.RR }

func (r *mdnsResponseRecords) add(answer, extra []dns.RR) {
	for _, rr := range answer {
		if !mdnsContainsRR(r.answer, rr) {
			r.answer = append(r.answer, rr)
		}
	}
	kept := r.extra[:0]
	for _, rr := range r.extra {
		if !mdnsContainsRR(r.answer, rr) {
			kept = append(kept, rr)
		}
	}
	r.extra = kept
	for _, rr := range extra {
		if !mdnsContainsRR(r.answer, rr) && !mdnsContainsRR(r.extra, rr) {
			r.extra = append(r.extra, rr)
		}
	}
}

func (r *mdnsResponseRecords) empty() bool { return len(r.answer) == 0 && len(r.extra) == 0 }

func mdnsContainsRR(list []dns.RR, rr dns.RR) bool {
	for _, x := range list {
		if dns.IsDuplicate(x, rr) {
			return true
		}
	}
	return false
}

// records answers one question from zone: the records that answer it, and
// the additional records a querier will want next.
func (a *Advertiser) records(zone *mdns.MDNSService, q dns.Question) (answer, extra []dns.RR) {
	if q.Qclass&^mdnsUnicastBit != dns.ClassINET && q.Qclass&^mdnsUnicastBit != dns.ClassANY {
		return nil, nil
	}
	var name string
	for _, n := range []string{a.host, a.instance, a.service, a.enum} {
		if strings.EqualFold(q.Name, n) {
			name = n
			break
		}
	}
	if name == "" {
		return nil, nil
	}
	if name == a.host {
		addrs := append(zone.Records(dns.Question{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}),
			zone.Records(dns.Question{Name: name, Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})...)
		if q.Qtype != dns.TypeA && q.Qtype != dns.TypeAAAA && q.Qtype != dns.TypeANY {
			// The host has no records of other types: say so.
			return []dns.RR{mdnsHostNSEC(a.host, addrs)}, nil
		}
		answer, extra = mdnsSplitAnswers(addrs, name, q.Qtype)
		switch {
		case len(answer) == 0:
			// e.g. AAAA asked, only IPv4 here: a negative answer, with
			// the addresses there are as additional records (§6.2).
			answer = []dns.RR{mdnsHostNSEC(a.host, addrs)}
		case !mdnsHasBothFamilies(addrs):
			extra = append(extra, mdnsHostNSEC(a.host, addrs))
		}
		return answer, extra
	}
	recs := zone.Records(dns.Question{Name: name, Qtype: q.Qtype, Qclass: dns.ClassINET})
	answer, extra = mdnsSplitAnswers(recs, name, q.Qtype)
	if len(answer) == 0 {
		return nil, nil // e.g. an A question about the instance name
	}
	// Address records sent with an SRV come with an NSEC listing the
	// address types the host has, so a querier need not wait for the
	// missing family (RFC 6762 §6.1, §6.2).
	var addrs []dns.RR
	for _, rr := range extra {
		if t := rr.Header().Rrtype; t == dns.TypeA || t == dns.TypeAAAA {
			addrs = append(addrs, rr)
		}
	}
	if len(addrs) > 0 && !mdnsHasBothFamilies(addrs) {
		extra = append(extra, mdnsHostNSEC(a.host, addrs))
	}
	return answer, extra
}

// mdnsSplitAnswers puts the records of recs that answer a question for name and
// qtype first, the others second.
func mdnsSplitAnswers(recs []dns.RR, name string, qtype uint16) (answer, other []dns.RR) {
	for _, rr := range recs {
		h := rr.Header()
		if strings.EqualFold(h.Name, name) && (qtype == dns.TypeANY || h.Rrtype == qtype) {
			answer = append(answer, rr)
		} else {
			other = append(other, rr)
		}
	}
	return answer, other
}

func mdnsHasBothFamilies(recs []dns.RR) bool {
	var a, aaaa bool
	for _, rr := range recs {
		switch rr.Header().Rrtype {
		case dns.TypeA:
			a = true
		case dns.TypeAAAA:
			aaaa = true
		}
	}
	return a && aaaa
}

// mdnsHostNSEC is the RFC 6762 §6.1 form of NSEC: the owner name as next name
// and a bitmap of the types the host has.
func mdnsHostNSEC(host string, hostRecs []dns.RR) dns.RR {
	var types []uint16
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		for _, rr := range hostRecs {
			if rr.Header().Rrtype == t {
				types = append(types, t)
				break
			}
		}
	}
	return &dns.NSEC{
		Hdr:        dns.RR_Header{Name: host, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: mdnsTTL},
		NextDomain: host,
		TypeBitMap: types,
	}
}

// suppressKnownAnswers drops the answers the querier listed as known with at least
// half their TTL left (RFC 6762 §7.1).
func suppressKnownAnswers(answer, known []dns.RR) []dns.RR {
	if len(known) == 0 {
		return answer
	}
	var out []dns.RR
next:
	for _, rr := range answer {
		for _, k := range known {
			k = dns.Copy(k)
			k.Header().Class &^= mdnsCacheFlushBit
			if dns.IsDuplicate(k, rr) && k.Header().Ttl >= rr.Header().Ttl/2 {
				continue next
			}
		}
		out = append(out, rr)
	}
	return out
}

// capLegacyTTL returns copies of recs with TTLs of at most 10 s, for legacy
// unicast answers.
func capLegacyTTL(recs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(recs))
	for i, rr := range recs {
		rr = dns.Copy(rr)
		if rr.Header().Ttl > mdnsLegacyMaxTTL {
			rr.Header().Ttl = mdnsLegacyMaxTTL
		}
		out[i] = rr
	}
	return out
}

// newMDNSResponse builds an mDNS response (RFC 6762 §18). With cacheFlush the
// unique records (all but PTR) get the cache-flush bit.
func newMDNSResponse(id uint16, answer, extra []dns.RR, cacheFlush bool) *dns.Msg {
	mark := func(recs []dns.RR) []dns.RR {
		if !cacheFlush {
			return recs
		}
		out := make([]dns.RR, len(recs))
		for i, rr := range recs {
			rr = dns.Copy(rr)
			if rr.Header().Rrtype != dns.TypePTR {
				rr.Header().Class |= mdnsCacheFlushBit
			}
			out[i] = rr
		}
		return out
	}
	return &dns.Msg{
		MsgHdr: dns.MsgHdr{
			Id:            id,
			Response:      true,
			Authoritative: true,
			Opcode:        dns.OpcodeQuery,
		},
		Compress: true,
		Answer:   mark(answer),
		Extra:    mark(extra),
	}
}

// sendMulticastLocked multicasts msg on iz's interface, or through the
// default multicast interface when iz is nil. a.mu must be held.
func (a *Advertiser) sendMulticastLocked(msg *dns.Msg, iz *ifaceZone) {
	b, err := msg.Pack()
	if err != nil || len(b) > mdnsMaxPacket {
		return
	}
	var cm *ipv4.ControlMessage
	if iz != nil {
		cm = &ipv4.ControlMessage{IfIndex: iz.ifi.Index}
	}
	if _, err := a.pc.WriteTo(b, cm, mdnsGroup); err != nil && cm != nil {
		// Platforms without IP_PKTINFO: pick the interface by socket
		// option instead (safe: sends are serialised by a.mu).
		if a.pc.SetMulticastInterface(&iz.ifi) == nil {
			_, err = a.pc.WriteTo(b, nil, mdnsGroup)
		}
		if err != nil {
			return
		}
	}
	if iz != nil {
		iz.lastMulticast = time.Now()
	}
}

// announceLoop sends the RFC 6762 §8.3 announcements, then ends.
func (a *Advertiser) announceLoop() {
	defer a.announced.Done()
	for i := 0; i < mdnsAnnounceCount; i++ {
		if i > 0 {
			t := time.NewTimer(mdnsAnnounceGap)
			select {
			case <-a.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		a.mu.Lock()
		if !a.closed {
			a.announceLocked(mdnsTTL)
		}
		a.mu.Unlock()
	}
}

// announceLocked multicasts all the records on every interface with the
// given TTL: an announcement, or with 0 a goodbye. Goodbyes carry no
// cache-flush bits, so they remove exactly these records and no others.
// a.mu must be held.
func (a *Advertiser) announceLocked(ttl uint32) {
	send := func(iz *ifaceZone, zone *mdns.MDNSService) {
		recs := zone.Records(dns.Question{Name: a.service, Qtype: dns.TypePTR, Qclass: dns.ClassINET})
		recs = append(recs, zone.Records(dns.Question{Name: a.enum, Qtype: dns.TypePTR, Qclass: dns.ClassINET})...)
		for _, rr := range recs {
			rr.Header().Ttl = ttl
		}
		a.sendMulticastLocked(newMDNSResponse(0, recs, nil, ttl > 0), iz)
	}
	if len(a.ifaces) == 0 {
		send(nil, a.all)
		return
	}
	for _, iz := range a.ifaces {
		send(iz, iz.zone)
	}
}
