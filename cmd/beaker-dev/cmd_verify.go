package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

func verifyCommand(g *globalOptions) *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "re-check every signature, entry, Merkle node and chunk of an archive",
		ArgsUsage: "[DIR|URL]",
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1)
			if err != nil {
				return err
			}
			return runVerify(c.Context, g, argOr(a, 0, ""))
		},
	}
}

type verifyResult struct {
	URL       string   `json:"url"`
	Key       string   `json:"key"`
	Version   uint64   `json:"version"`
	OK        bool     `json:"ok"`
	Versions  int      `json:"versions"`
	Entries   uint64   `json:"entries"`
	Chunks    int      `json:"chunks"`
	Bytes     int64    `json:"bytes"`
	Problems  []string `json:"problems"`
	TornTails []string `json:"torn_tails"`
}

// verifyTarget finds the archive arg names without opening it, so damaged
// archives that no longer open can still be verified.
func (g *globalOptions) verifyTarget(arg string) (*hyperdrive.Store, hyperdrive.PublicKey, error) {
	t, err := g.openTarget(arg)
	if err == nil {
		defer t.Close()
		return t.store, t.archive.Key(), nil
	}
	// The archive may be too damaged to open: find its key another way.
	store, serr := g.store()
	if serr != nil {
		return nil, hyperdrive.PublicKey{}, err
	}
	key, kerr := g.keyOf(arg)
	if kerr != nil || !store.HasArchive(key) {
		return nil, hyperdrive.PublicKey{}, err
	}
	return store, key, nil
}

func runVerify(ctx context.Context, g *globalOptions, arg string) error {
	store, key, err := g.verifyTarget(arg)
	if err != nil {
		return err
	}
	progress, done := g.progress("verifying")
	rep, err := hyperdrive.Verify(ctx, store.ArchiveDir(key), key, hyperdrive.VerifyOptions{Progress: progress})
	done()
	if err != nil {
		return err
	}
	res := verifyResult{URL: key.URL(), Key: key.String(), Version: rep.LastVersion, OK: rep.OK(), Versions: rep.Versions,
		Entries: rep.Entries, Chunks: rep.Chunks, Bytes: rep.ChunkBytes, Problems: []string{}, TornTails: rep.TornTails}
	if res.TornTails == nil {
		res.TornTails = []string{}
	}
	for _, p := range rep.Problems {
		res.Problems = append(res.Problems, clean(p))
	}
	if err := g.emit(res, func(w io.Writer) {
		fmt.Fprintf(w, "%s: %d versions, %d entries, %d chunks (%s) checked\n", key.URL(), res.Versions, res.Entries, res.Chunks, humanBytes(uint64(res.Bytes)))
		for _, tail := range res.TornTails {
			fmt.Fprintf(w, "  leftover of an interrupted write (harmless, cut by the next publish): %s\n", tail)
		}
		for _, p := range res.Problems {
			fmt.Fprintf(w, "  FAULT %s\n", p)
		}
		if res.OK {
			fmt.Fprintln(w, "OK")
		}
	}); err != nil {
		return err
	}
	if !rep.OK() {
		more := ""
		if len(rep.Problems) > 1 {
			more = fmt.Sprintf(" (and %d more faults)", len(rep.Problems)-1)
		}
		return &userError{code: exitCorrupt, msg: fmt.Sprintf("verify failed: %s%s; restore the archive from a copy or clone it again from a peer", clean(rep.Problems[0]), more)}
	}
	return nil
}
