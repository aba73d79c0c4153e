// Package namestest runs the real servers that shortname tests resolve
// against: a throwaway certificate authority that issues HTTPS
// certificates, and dnsmasq serving TXT (and address) records on a
// loopback port. It is for tests only.
package namestest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// CA is a certificate authority made for one test.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte         // Cert, PEM-encoded: the contents of an SSL_CERT_FILE
	Pool *x509.CertPool // holding only Cert
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "beaker-dev test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool, key: key}
}

// Certificate issues a server certificate for hosts (DNS names or IP
// addresses).
func (ca *CA) Certificate(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// SkipOrFail skips the test, or fails it under CI (CI=true), where every
// component the tests need must be installed.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Dnsmasq finds the dnsmasq binary, or skips the test (fails it in CI)
// saying how to install it.
func Dnsmasq(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/dnsmasq", "/sbin/dnsmasq"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	SkipOrFail(t, "dnsmasq not found: apt-get install dnsmasq-base (or dnsmasq)")
	return ""
}

// DNSConfig is what a DNSServer serves.
type DNSConfig struct {
	// TXT records, several per name if need be.
	TXT []TXT
	// Hosts: name -> IP address (A or AAAA).
	Hosts map[string]string
	// Local is a domain answered from these records only: a name in it
	// with no record is NXDOMAIN (default "test"). Other names are
	// REFUSED, dnsmasq having no upstream server.
	Local string
	// TTL of every answer, in seconds (dnsmasq's --local-ttl; default 0).
	TTL int
	// Addr to listen on, IP:PORT (default 127.0.0.1 and a free port).
	Addr string
}

// TXT is one TXT record: its name and its strings (one, usually; a
// resolver joins them).
type TXT struct {
	Name    string
	Strings []string
}

// DNSServer is a running dnsmasq.
type DNSServer struct {
	Addr string // IP:PORT it answers on, UDP and TCP
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// StartDNS starts dnsmasq serving cfg; it is stopped when the test ends.
func StartDNS(t testing.TB, cfg DNSConfig) *DNSServer {
	t.Helper()
	bin := Dnsmasq(t)
	if cfg.Local == "" {
		cfg.Local = "test"
	}
	var lastLog string
	for attempt := 0; attempt < 10; attempt++ {
		addr := cfg.Addr
		if addr == "" {
			addr = freePort(t)
		}
		d, err := startDNS(bin, addr, cfg)
		if err == nil {
			t.Cleanup(d.Stop)
			return d
		}
		lastLog = err.Error()
		if cfg.Addr != "" {
			break
		}
	}
	t.Fatalf("dnsmasq did not start: %s", lastLog)
	return nil
}

func startDNS(bin, addr string, cfg DNSConfig) (*DNSServer, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--port=" + port, "--listen-address=" + host, "--bind-interfaces", "--pid-file=",
		"--log-queries", "--log-facility=-", "--local=/" + cfg.Local + "/",
		"--local-ttl=" + strconv.Itoa(cfg.TTL),
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root", "--group=root")
	}
	for _, r := range cfg.TXT {
		rec := "--txt-record=" + r.Name
		for _, s := range r.Strings {
			rec += "," + s // dnsmasq keeps quotes; commas split strings
		}
		args = append(args, rec)
	}
	for _, name := range sortedKeys(cfg.Hosts) {
		args = append(args, "--host-record="+name+","+cfg.Hosts[name])
	}
	d := &DNSServer{Addr: addr, log: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	// Ready when it answers.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return nil, fmt.Errorf("dnsmasq %s exited: %s", strings.Join(args, " "), d.log.String())
		default:
		}
		q := new(dns.Msg)
		q.SetQuestion("ready-probe."+cfg.Local+".", dns.TypeTXT)
		c := &dns.Client{Timeout: 200 * time.Millisecond}
		if _, _, err := c.ExchangeContext(context.Background(), q, addr); err == nil {
			return d, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.Stop()
	return nil, fmt.Errorf("dnsmasq did not answer on %s: %s", addr, d.log.String())
}

// Stop kills the server and waits for it to exit.
func (d *DNSServer) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Kill()
	<-d.done
}

// Queries counts the questions asked about name so far (any type).
func (d *DNSServer) Queries(name string) int {
	n := 0
	for _, line := range strings.Split(d.log.String(), "\n") {
		// dnsmasq[PID]: query[TXT] NAME from 127.0.0.1
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(f[1], "query[") && strings.EqualFold(f[2], name) {
			n++
		}
	}
	return n
}

// Log returns what dnsmasq has logged.
func (d *DNSServer) Log() string { return d.log.String() }

// freePort returns 127.0.0.1:PORT with PORT free for both UDP and TCP
// at the time of the call.
func freePort(t testing.TB) string {
	t.Helper()
	for {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp4", addr)
		u.Close()
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
