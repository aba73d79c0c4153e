package publish

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// The crash test re-runs this test binary as a child that imports a site,
// and kills it with SIGKILL at a random instant.
func TestMain(m *testing.M) {
	if os.Getenv("BEAKER_DEV_CRASH_CHILD") == "1" {
		crashChild()
		return
	}
	os.Exit(m.Run())
}

func crashChild() {
	store, err := hyperdrive.OpenStore(os.Getenv("BEAKER_DEV_HOME"))
	if err != nil {
		os.Exit(2)
	}
	site, err := OpenSite(os.Getenv("CRASH_SITE"))
	if err != nil {
		os.Exit(3)
	}
	a, err := store.Open(site.Key, hyperdrive.Options{})
	if err != nil {
		os.Exit(4)
	}
	if _, err := Import(context.Background(), a, site.Dir, ImportOptions{LockWait: 5 * time.Second}); err != nil {
		os.Exit(5)
	}
	os.Exit(0)
}

func TestCrashDuringImport(t *testing.T) {
	trials := 50
	if testing.Short() {
		trials = 10
	}
	store, a, dir := newSite(t)
	key := a.Key()
	a.Close()
	rng := rand.New(rand.NewPCG(99, 1))
	randomTree(t, rng, dir, 150)
	for i := 0; i < 6; i++ {
		writeFile(t, filepath.Join(dir, "big", "f"+itoa(i)), fill(rng, 3<<20))
	}
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "BEAKER_DEV_CRASH_CHILD=1", "BEAKER_DEV_HOME="+store.Dir(), "CRASH_SITE="+dir)
		return cmd
	}
	// Calibrate: how long does an uninterrupted import of this much take?
	// The estimate follows the runs that finish, since the load of the
	// machine changes under the test.
	start := time.Now()
	if out, err := child().CombinedOutput(); err != nil {
		t.Fatalf("calibration import: %v %s", err, out)
	}
	span := time.Since(start)
	t.Logf("one import takes %v", span)
	killed := 0
	// At least `trials` trials, and as many more (up to 3x) as it takes for
	// a third of them to be killed in the middle of an import.
	trial := 0
	for ; trial < trials || (killed < trials/3 && trial < 3*trials); trial++ {
		// Give every trial work to do: rewrite a few files, delete one.
		for i := 0; i < 3; i++ {
			writeFile(t, filepath.Join(dir, "big", "f"+itoa(rng.IntN(6))), fill(rng, 1<<20+rng.IntN(2<<20)))
		}
		writeFile(t, filepath.Join(dir, "trial", "t"+itoa(trial)+".html"), fill(rng, 5000))
		os.Remove(filepath.Join(dir, "trial", "t"+itoa(trial-2)+".html"))

		cmd := child()
		began := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(span * 9 / 10))))
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killed++
		} else {
			span = (span + time.Since(began)) / 2 // it finished: aim earlier
		}
		// It must reopen at a complete version and verify clean...
		rep, err := hyperdrive.Verify(context.Background(), store.ArchiveDir(key), key, hyperdrive.VerifyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Fatalf("trial %d: verify after kill: %v", trial, rep.Problems[0])
		}
		b, err := store.Open(key, hyperdrive.Options{})
		if err != nil {
			t.Fatalf("trial %d: reopen after kill: %v", trial, err)
		}
		// ...and the next import finishes the job.
		if _, err := Import(context.Background(), b, dir, ImportOptions{}); err != nil {
			t.Fatalf("trial %d: import after kill: %v", trial, err)
		}
		if trial%10 == 0 {
			sameTree(t, "after crash", exported(t, b.Latest()), published(t, dir))
		}
		b.Close()
		rep, _ = hyperdrive.Verify(context.Background(), store.ArchiveDir(key), key, hyperdrive.VerifyOptions{})
		if !rep.OK() || len(rep.TornTails) != 0 {
			t.Fatalf("trial %d: verify after finishing: %v %v", trial, rep.Problems, rep.TornTails)
		}
	}
	t.Logf("%d of %d children were killed mid-import", killed, trial)
	if killed < trials/3 {
		t.Fatalf("only %d of %d trials interrupted an import", killed, trial)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
