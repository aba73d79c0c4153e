package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
	"github.com/beaker-dev/beaker-dev/publish"
)

var binary string

// TestMain builds the real binary once: the end-to-end tests run it as a
// user would, checking exit statuses and output.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "beaker-dev-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "beaker-dev")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestReorderArgs(t *testing.T) {
	app := newApp(&globalOptions{})
	for _, tc := range []struct{ in, want string }{
		{"publish site --json", "--json publish site"},
		{"publish --json site", "--json publish site"},
		{"--json publish site", "--json publish site"},
		{"tag 2.1.0 site -m hello", "tag -m hello 2.1.0 site"},
		{"tag -m hello 2.1.0 site", "tag -m hello 2.1.0 site"},
		{"export site out --version 3 --data-dir /d", "--data-dir /d export --version 3 site out"},
		{"export site out --version=3", "export --version=3 site out"},
		{"keys export site --out k.pem", "keys export --out k.pem site"},
		{"diff 1 latest -- -odd-dir", "diff -- 1 latest -odd-dir"},
		{"init site --template blog --title My Blog", "init --template blog --title My site Blog"},
		{"publish site --help", "publish --help site"},
	} {
		got := strings.Join(reorderArgs(app, append([]string{"beaker-dev"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("reorder(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

type shell struct {
	t    *testing.T
	home string
	dir  string
}

func newCLI(t *testing.T) *shell {
	return &shell{t: t, home: filepath.Join(t.TempDir(), "home"), dir: t.TempDir()}
}

// run runs the binary and returns stdout, stderr and the exit status.
func (c *shell) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "BEAKER_DEV_HOME="+c.home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ok runs a command that must succeed and decodes its JSON output.
func (c *shell) ok(v any, args ...string) {
	c.t.Helper()
	out, errs, code := c.run(append(args, "--json")...)
	if code != 0 {
		c.t.Fatalf("%v: exit %d: %s", args, code, errs)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			c.t.Fatalf("%v: output is not JSON: %v\n%s", args, err, out)
		}
	}
}

// fails runs a command that must fail with code and one line naming want.
func (c *shell) fails(code int, want string, args ...string) {
	c.t.Helper()
	_, errs, got := c.run(args...)
	if got != code {
		c.t.Fatalf("%v: exit %d, want %d (%s)", args, got, code, errs)
	}
	if strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, want) {
		c.t.Fatalf("%v: stderr %q, want one line containing %q", args, errs, want)
	}
}

func TestCommands(t *testing.T) {
	c := newCLI(t)
	var ini initResult
	c.ok(&ini, "init", "site", "--template", "blog", "--title", "Test Blog")
	if len(ini.Key) != 64 || ini.URL != "dat://"+ini.Key+"/" || ini.Files != 6 || ini.Version == 0 {
		t.Fatalf("init = %+v", ini)
	}
	site := filepath.Join(c.dir, "site")
	if _, err := os.Stat(filepath.Join(c.home, "keys", ini.Key+".key")); err != nil {
		t.Fatal("no key file in the data dir")
	}
	if st, _ := os.Stat(filepath.Join(c.home, "keys", ini.Key+".key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}

	var pub publishResult
	c.ok(&pub, "publish", "site")
	if pub.Committed || pub.Version != ini.Version {
		t.Fatalf("publish of an unchanged site = %+v", pub)
	}
	os.WriteFile(filepath.Join(site, "new.html"), []byte("<p>new</p>"), 0o644)
	c.ok(&pub, "publish", "site")
	if !pub.Committed || pub.Version <= ini.Version || !slices.Equal(pub.Changed, []string{"/new.html"}) || pub.NewBytes != 10 || pub.Chunks != 1 || pub.Key != ini.Key {
		t.Fatalf("publish = %+v", pub)
	}

	var tag tagResult
	c.ok(&tag, "tag", "v2.1.0", "site", "-m", "release")
	if tag.Tag != "2.1.0" || tag.Version != pub.Version {
		t.Fatalf("tag = %+v", tag)
	}
	c.fails(exitInvalid, "tag already exists", "tag", "2.1.0", "site")
	c.fails(exitInvalid, "not a semantic version", "tag", "two", "site")

	var log []logVersion
	c.ok(&log, "log", "site")
	if len(log) != 4 || log[0].Changes[0].Tag != "2.1.0" || !slices.Equal(log[1].Tags, []string{"2.1.0"}) {
		t.Fatalf("log = %+v", log)
	}
	var info infoResult
	c.ok(&info, "info", "dat://"+ini.Key+"/")
	if info.Files != 7 || len(info.Tags) != 1 || !info.Writable {
		t.Fatalf("info = %+v", info)
	}
	var diff []diffEntry
	c.ok(&diff, "diff", itoa(ini.Version), "@2.1.0", "site")
	if len(diff) != 1 || diff[0].Path != "/new.html" || diff[0].Change != "added" {
		t.Fatalf("diff = %+v", diff)
	}
	var exp exportResult
	c.ok(&exp, "export", "site", "out", "--version", itoa(ini.Version))
	if exp.Files != 6 {
		t.Fatalf("export = %+v", exp)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dir, "out", "posts", "hello-world.html")); !bytes.Contains(b, []byte("Test Blog")) {
		t.Fatal("exported file differs")
	}
	c.fails(exitInvalid, "not empty", "export", "site", "out")
	var ver verifyResult
	c.ok(&ver, "verify", "site")
	if !ver.OK || ver.Versions != 4 {
		t.Fatalf("verify = %+v", ver)
	}

	// Bad input.
	c.fails(exitNotFound, "not a beaker-dev site", "publish", c.t.TempDir())
	c.fails(exitNotFound, "no such version", "export", "site", "out2", "--version", "999")
	c.fails(exitNotFound, "no such tag", "diff", "@9.9.9", "latest", "site")
	c.fails(exitInvalid, "not a dat:// URL", "info", "dat://not-a-key!/")
	c.fails(exitUsage, "unknown command", "frobnicate")
	c.fails(exitUsage, "flag provided but not defined", "publish", "--frob", "site")
	c.fails(exitUsage, "takes 1 to 2 argument(s)", "tag")
	c.fails(exitInvalid, "already a beaker-dev site", "init", "site")
	c.fails(exitInvalid, "no such scaffold", "init", "other", "--template", "nope")
}

func TestSecondWriterIsNamed(t *testing.T) {
	c := newCLI(t)
	var ini initResult
	c.ok(&ini, "init", "site")
	store, _ := hyperdrive.OpenStore(c.home)
	key, _ := hyperdrive.ParsePublicKey(ini.Key)
	a, err := store.Open(key, hyperdrive.Options{LockHolder: "pid 4242 (beaker-dev serve site)"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w, err := a.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	os.WriteFile(filepath.Join(c.dir, "site", "x.html"), []byte("x"), 0o644)
	c.fails(exitLocked, "locked by pid 4242 (beaker-dev serve site)", "publish", "site")
}

func TestVerifyNamesFirstBadRecord(t *testing.T) {
	c := newCLI(t)
	var ini initResult
	c.ok(&ini, "init", "site")
	chunks := filepath.Join(c.home, "archives", ini.Key, "chunks")
	b, _ := os.ReadFile(chunks)
	b[len(b)-3] ^= 0x40
	os.WriteFile(chunks, b, 0o600)
	c.fails(exitCorrupt, "chunks record", "verify", "site")
}

func TestKeysMoveBetweenMachines(t *testing.T) {
	a := newCLI(t)
	var ini initResult
	a.ok(&ini, "init", "site")
	keyFile := filepath.Join(a.dir, "key.pem")
	a.ok(nil, "keys", "export", "site", "--out", keyFile)
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("exported key mode %v", st.Mode().Perm())
	}
	a.fails(exitInvalid, "exists", "keys", "export", "site", "--out", keyFile)

	// The second machine has the archive (copied data dir) but not the key.
	b := newCLI(t)
	os.MkdirAll(filepath.Join(b.home, "archives"), 0o700)
	if err := os.CopyFS(filepath.Join(b.home, "archives", ini.Key), os.DirFS(filepath.Join(a.home, "archives", ini.Key))); err != nil {
		t.Fatal(err)
	}
	os.CopyFS(filepath.Join(b.dir, "site"), os.DirFS(filepath.Join(a.dir, "site")))
	os.WriteFile(filepath.Join(b.dir, "site", "more.html"), []byte("more"), 0o644)
	b.fails(exitNotFound, "no secret key", "publish", "site")
	var imp keysResult
	b.ok(&imp, "keys", "import", keyFile, "site")
	if imp.Key != ini.Key {
		t.Fatalf("imported %s, want %s", imp.Key, ini.Key)
	}
	var pub publishResult
	b.ok(&pub, "publish", "site")
	if !pub.Committed {
		t.Fatal("publish after keys import committed nothing")
	}
	// A tampered key file is refused.
	bad, _ := os.ReadFile(keyFile)
	bad = bytes.Replace(bad, []byte(ini.Key[:8]), []byte("00000000"), 1)
	os.WriteFile(filepath.Join(b.dir, "bad.pem"), bad, 0o600)
	b.fails(exitInvalid, "not a beaker-dev secret key", "keys", "import", "bad.pem")
	// A key without its archive cannot be linked (it would fork history).
	fresh := newCLI(t)
	fresh.fails(exitNotFound, "would fork", "keys", "import", keyFile, "site2")
}

func TestNotSiteMessage(t *testing.T) {
	_, err := publish.OpenSite(t.TempDir())
	code, msg := exitCode(err)
	if code != exitNotFound || !strings.Contains(msg, "beaker-dev init") {
		t.Fatalf("exitCode = %d %q", code, msg)
	}
}

func itoa(v uint64) string { return strings.TrimSpace(string(must(json.Marshal(v)))) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
