package swarm

import (
	"context"
	"path/filepath"

	"github.com/fsnotify/fsnotify"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// watchSignatures reports writes to an author's signatures file: another
// process (beaker-dev tag or publish while serve runs) committed a version.
// Replicas are written only through the feed, so they are not watched. The
// channel has room for one pending signal; it stops with ctx.
func (f *Feed) watchSignatures(ctx context.Context, a *hyperdrive.Archive) <-chan struct{} {
	if !a.Writable() {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil
	}
	if err := w.Add(a.Dir()); err != nil {
		w.Close()
		return nil
	}
	ch := make(chan struct{}, 1)
	sigs := filepath.Join(a.Dir(), "signatures")
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Name == sigs && ev.Has(fsnotify.Write) {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return ch
}
