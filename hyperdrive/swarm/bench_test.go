package swarm

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// BenchmarkReplicate clones a 64 MiB, 500-file site from one seeder over
// loopback, TCP and uTP alone (bench/clone.sh does the whole command on the
// 256 MiB site).
func BenchmarkReplicate(b *testing.B) {
	files := map[string][]byte{}
	total := 0
	for i := 0; total < 64<<20; i++ {
		n := 4_000 + (i*7919)%400_000
		files[fmt.Sprintf("/d%d/f%04d.bin", i%20, i)] = randBytes(uint64(i), n)
		total += n
	}
	a := author(b, files)
	for _, transport := range []string{"tcp", "utp"} {
		b.Run(transport, func(b *testing.B) {
			sa := newSwarm(b, transport)
			sa.Join(a, JoinOptions{})
			b.SetBytes(int64(total))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				r := replica(b, a.Key())
				sb := newSwarm(b, transport)
				b.StartTimer()
				f, err := sb.Join(r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa)}})
				if err != nil {
					b.Fatal(err)
				}
				waitSynced(b, f, a.Version())
				b.StopTimer()
				sb.Close()
				r.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkLiveVersion measures from a commit at the author until a
// connected replica has stored the new version (the target: <= 50 ms).
func BenchmarkLiveVersion(b *testing.B) {
	a := author(b, map[string][]byte{"/index.html": []byte("<h1>0</h1>")})
	sa, sb := newSwarm(b, "tcp"), newSwarm(b, "tcp")
	sa.Join(a, JoinOptions{})
	r := replica(b, a.Key())
	f, _ := sb.Join(r, JoinOptions{Download: Latest, Peers: []netip.AddrPort{addr(sa)}})
	waitSynced(b, f, a.Version())
	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		v := commit(b, a, map[string][]byte{"/index.html": []byte(fmt.Sprintf("<h1>%d</h1>", i+1))})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := f.WaitSynced(ctx, v); err != nil {
			b.Fatal(err)
		}
		cancel()
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[len(samples)*9/10].Microseconds())/1000, "p90-ms")
	_ = hyperdrive.ErrClosed
}
