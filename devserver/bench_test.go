package devserver

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkBroadcast200 connects 200 pages (real websockets, answering
// "painted" the moment an update arrives, as a page with nothing to fetch
// would) and measures from Broadcast until every page has reported back.
// The target: 200 open pages all updated within 200 ms.
func BenchmarkBroadcast200(b *testing.B) {
	const pages = 200
	dir := b.TempDir()
	var mu sync.Mutex
	var reports int
	all := make(chan struct{}, 1)
	s, err := Listen(Options{Site: &testSite{dir: dir}, Addr: "127.0.0.1:0", Events: func(e Event) {
		if _, ok := e.(PaintEvent); ok {
			mu.Lock()
			reports++
			if reports == pages {
				all <- struct{}{}
			}
			mu.Unlock()
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	origin := "http://" + s.Addr().String()
	var wg sync.WaitGroup
	for i := 0; i < pages; i++ {
		h := http.Header{"Origin": {origin}}
		c, _, err := websocket.DefaultDialer.Dial("ws://"+s.Addr().String()+"/.beaker-dev/ws?token="+s.token, h)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.WriteJSON(map[string]any{"type": "hello", "version": "0", "file": "/index.html", "path": "/"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				var m map[string]any
				json.Unmarshal(msg, &m)
				if m["type"] == "update" {
					c.WriteJSON(map[string]any{"type": "painted", "id": m["id"], "ms": 0})
				}
			}
		}()
	}
	for s.Clients() < pages {
		time.Sleep(time.Millisecond)
	}
	var samples []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		mu.Lock()
		reports = 0
		mu.Unlock()
		start := time.Now()
		if n := s.Broadcast(Update{Version: "1", Paths: []string{"/index.html"}, SavedAt: start}); n != pages {
			b.Fatalf("reached %d pages", n)
		}
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			b.Fatal("not every page reported")
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
	s.Shutdown(context.Background())
	wg.Wait()
}
