package names

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// dnsAttempt bounds one question to one server; the method's Timeout
// bounds them all.
const dnsAttempt = 2 * time.Second

// lookupDNS asks for NAME's TXT records, of Options.DNSServer or else of
// each server of resolv.conf in turn (two rounds), and parses the answer.
// NXDOMAIN and a successful answer end the lookup; a server that fails or
// does not answer passes the question to the next.
func (r *Resolver) lookupDNS(ctx context.Context, name string) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	servers, rounds := []string{r.opts.DNSServer}, 2
	if r.opts.DNSServer == "" {
		servers = r.systemServers()
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	q.SetEdns0(1232, false)
	var failures []string
	for round := 0; round < rounds && ctx.Err() == nil; round++ {
		failures = failures[:0]
		for _, server := range servers {
			if ctx.Err() != nil {
				break
			}
			in, err := r.exchange(ctx, server, q)
			switch {
			case err != nil:
				failures = append(failures, server+": "+dnsFailure(err))
			case in.Rcode == dns.RcodeNameError:
				return answer{}, methodErr(SourceDNS, ErrNotFound, nil, "%s does not exist (NXDOMAIN from %s)", name, server)
			case in.Rcode == dns.RcodeSuccess:
				return parseTXT(name, server, in)
			default:
				failures = append(failures, server+" answered "+rcodeName(in.Rcode))
			}
		}
	}
	if len(failures) == 0 {
		failures = append(failures, fmt.Sprintf("no answer within %v", r.opts.Timeout))
	}
	return answer{}, methodErr(SourceDNS, ErrUnreachable, ctx.Err(), "TXT %s: %s", name, strings.Join(failures, ", "))
}

// systemServers reads the DNS servers of resolv.conf; without any, it
// falls back to the local host, as the C library does.
func (r *Resolver) systemServers() []string {
	var servers []string
	if cfg, err := dns.ClientConfigFromFile(r.opts.ResolvConf); err == nil {
		for _, s := range cfg.Servers {
			servers = append(servers, net.JoinHostPort(s, cfg.Port))
		}
	}
	if len(servers) == 0 {
		servers = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return servers
}

// exchange asks one server over UDP, then over TCP if the answer was
// truncated. Cancelling ctx closes the connection at once.
func (r *Resolver) exchange(ctx context.Context, server string, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsAttempt)
	defer cancel()
	in, err := r.exchangeOver(ctx, "udp", server, q)
	if err == nil && in.Truncated {
		in, err = r.exchangeOver(ctx, "tcp", server, q)
	}
	return in, err
}

func (r *Resolver) exchangeOver(ctx context.Context, network, server string, q *dns.Msg) (*dns.Msg, error) {
	c, err := r.opts.Dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	m := q.Copy()
	m.Id = dns.Id()
	in, _, err := (&dns.Client{Net: network}).ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: c})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if len(in.Question) != 1 || !strings.EqualFold(in.Question[0].Name, m.Question[0].Name) || in.Question[0].Qtype != dns.TypeTXT {
		return nil, errors.New("the answer is for another question")
	}
	return in, nil
}

// dnsFailure phrases a failed exchange.
func dnsFailure(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer"
	}
	return netErrText(err)
}

// parseTXT finds the datkey= records of a successful answer: TXT records
// in the answer section (after any CNAMEs), each the concatenation of its
// strings. Other TXT records (SPF and the like) are ignored. One key,
// possibly in several records, is an answer; none is ErrNotFound; only
// malformed ones, or two different keys, are ErrMalformed. The TTL is the
// smallest of the records giving the key.
func parseTXT(name, server string, in *dns.Msg) (answer, error) {
	var key hyperdrive.PublicKey
	var ttl uint32
	found, bad := 0, ""
	for _, rr := range in.Answer {
		t, ok := rr.(*dns.TXT)
		if !ok {
			continue
		}
		var joined strings.Builder
		for _, part := range t.Txt {
			joined.WriteString(unescapeTXT(part))
		}
		s := strings.Trim(strings.TrimSpace(joined.String()), `"`)
		v, ok := cutPrefixFold(s, "datkey=")
		if !ok {
			continue
		}
		k, err := hyperdrive.ParsePublicKey(strings.TrimSpace(v))
		if err != nil {
			bad = s
			continue
		}
		switch {
		case found == 0:
			key, ttl = k, t.Hdr.Ttl
		case k != key:
			return answer{}, methodErr(SourceDNS, ErrMalformed, nil, "%s has TXT records naming two different keys (datkey=%s and datkey=%s)", name, key, k)
		default:
			ttl = min(ttl, t.Hdr.Ttl)
		}
		found++
	}
	switch {
	case found > 0:
		return answer{key: key, source: SourceDNS, ttl: time.Duration(ttl) * time.Second}, nil
	case bad != "":
		return answer{}, methodErr(SourceDNS, ErrMalformed, nil, "the TXT record of %s is not datkey=<64 hex>: %s", name, quoteShort(bad))
	}
	return answer{}, methodErr(SourceDNS, ErrNotFound, nil, "%s has no TXT record datkey=<64 hex> (asked %s)", name, server)
}

func rcodeName(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "rcode " + strconv.Itoa(rc)
}

// unescapeTXT undoes miekg/dns's presentation escapes in a TXT string:
// \X for a special character X, \DDD for a byte in decimal.
func unescapeTXT(s string) string {
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
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n, err := strconv.Atoi(s[i+1 : i+4]); err == nil && n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
