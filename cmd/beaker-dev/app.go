package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/beaker-dev/beaker-dev/hyperdrive"
)

// globalOptions are the flags every command shares, and where output goes.
type globalOptions struct {
	dataDir  string
	json     bool
	resolver string // --resolver: the DNS server names are looked up on
	net      networkOptions
	stdout   io.Writer
	stderr   io.Writer
}

// newApp builds the command tree. Actions only read flags into an options
// struct and call the matching run function.
func newApp(g *globalOptions) *cli.App {
	app := &cli.App{
		Name:                 "beaker-dev",
		Usage:                "build, preview and publish peer-to-peer websites",
		HideHelpCommand:      false,
		EnableBashCompletion: false,
		Writer:               g.stdout,
		ErrWriter:            g.stderr,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "keys and archives (default $BEAKER_DEV_HOME or ~/.local/share/beaker-dev)", EnvVars: []string{"BEAKER_DEV_HOME"}, Destination: &g.dataDir},
			&cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON", Destination: &g.json},
			&cli.StringFlag{Name: "resolver", Usage: "look DNS names of sites up on this DNS server, HOST:PORT (default: the system's)", Destination: &g.resolver},
		}, networkFlags(&g.net)...),
		Commands: []*cli.Command{
			initCommand(g),
			serveCommand(g),
			publishCommand(g),
			tagCommand(g),
			logCommand(g),
			infoCommand(g),
			diffCommand(g),
			exportCommand(g),
			verifyCommand(g),
			keysCommand(g),
			cloneCommand(g),
			seedCommand(g),
			resolveCommand(g),
			bootstrapCommand(g),
			viewCommand(g),
			forkCommand(g),
			gcCommand(g),
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		// Errors are printed once, by run, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	setUsageErrors(app.Commands)
	return app
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return &usageError{msg: err.Error()}
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		setUsageErrors(c.Subcommands)
	}
}

// args checks the positional argument count.
func args(c *cli.Context, min, max int) ([]string, error) {
	a := c.Args().Slice()
	if len(a) < min || len(a) > max {
		want := fmt.Sprintf("%d to %d", min, max)
		if min == max {
			want = fmt.Sprint(min)
		}
		return nil, usagef("%s takes %s argument(s) (%s), got %d", c.Command.FullName(), want, c.Command.ArgsUsage, len(a))
	}
	return a, nil
}

// argOr returns a[i], or def when there is no such argument.
func argOr(a []string, i int, def string) string {
	if i < len(a) {
		return a[i]
	}
	return def
}

// store opens the data directory.
func (g *globalOptions) store() (*hyperdrive.Store, error) {
	dir := g.dataDir
	if dir == "" {
		var err error
		if dir, err = hyperdrive.DefaultStoreDir(); err != nil {
			return nil, err
		}
	}
	return hyperdrive.OpenStore(dir)
}

// emit prints v as one JSON object with --json, else calls text.
func (g *globalOptions) emit(v any, text func(w io.Writer)) error {
	if g.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	text(g.stdout)
	return nil
}

// warn prints a warning line on stderr (also with --json: stdout stays JSON).
func (g *globalOptions) warn(format string, args ...any) {
	fmt.Fprintf(g.stderr, "beaker-dev: warning: "+format+"\n", args...)
}

// interactive reports whether stderr is a terminal a person watches.
func (g *globalOptions) interactive() bool {
	f, ok := g.stderr.(*os.File)
	return ok && !g.json && term.IsTerminal(int(f.Fd()))
}

// progress returns a progress callback drawing a bar on a terminal, or nil.
// The bar appears only for work that takes a moment.
func (g *globalOptions) progress(desc string) (func(done, total int64), func()) {
	if !g.interactive() {
		return nil, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	update := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			if total < 32<<20 {
				return
			}
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(g.stderr),
				progressbar.OptionSetDescription(desc),
				progressbar.OptionShowBytes(true),
				progressbar.OptionThrottle(100e6),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Set64(done)
	}
	return update, func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			bar.Finish()
		}
	}
}
