package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beaker-dev/beaker-dev/devserver"
	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/publish"
)

// BenchmarkStaticFile compares serving a 4 KiB stylesheet as serve does
// (the folder as it will be published, through the ignore rules and an
// os.Root, plus the host check, Beaker's resolution and ETags) with a plain
// http.FileServer on the same folder, over keep-alive connections. The
// target: >= 50% of http.FileServer's requests per second.
func BenchmarkStaticFile(b *testing.B) {
	dir := b.TempDir()
	css := strings.Repeat("body { color: #123456; }\n", 170)
	os.MkdirAll(filepath.Join(dir, "css", "deep"), 0o755)
	os.WriteFile(filepath.Join(dir, "css", "deep", "site.css"), []byte(css), 0o644)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><head></head>x"), 0o644)
	os.WriteFile(filepath.Join(dir, ".datignore"), []byte("drafts/\n*.log\n"), 0o644)
	const file = "/css/deep/site.css"

	run := func(b *testing.B, base string) {
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		b.SetBytes(int64(len(css)))
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(base + file)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
	b.Run("http.FileServer", func(b *testing.B) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
		go srv.Serve(ln)
		defer srv.Close()
		run(b, "http://"+ln.Addr().String())
	})
	b.Run("serve", func(b *testing.B) {
		store, _ := hyperdrive.OpenStore(b.TempDir())
		a, err := store.Create(hyperdrive.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		folder, err := publish.NewFolderFS(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer folder.Close()
		s, err := devserver.Listen(devserver.Options{Site: &preview{folder: folder, archive: a, publishing: true}, Addr: "127.0.0.1:0"})
		if err != nil {
			b.Fatal(err)
		}
		go s.Serve()
		defer s.Shutdown(context.Background())
		run(b, strings.TrimSuffix(s.LocalURL(), "/"))
	})
}
