// Package discovery finds the peers of an archive without revealing its
// key: every source announces and looks up an id derived from the archive's
// discovery key. Sources: the Mainline DHT (BEP 5, through
// anacrolix/dht/v2), DNS discovery servers speaking the protocol of Dat's
// dns-discovery package, and mDNS on the LAN.
package discovery

// Kept in go.mod while the sources are written.
import (
	_ "github.com/anacrolix/dht/v2"
	_ "github.com/anacrolix/utp"
	_ "github.com/miekg/dns"
	_ "golang.org/x/time/rate"
)
