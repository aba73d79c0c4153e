// Command beaker-dev builds, previews and publishes websites that live on a
// peer-to-peer network in the style of Beaker Browser's Dat protocol.
//
// Each command is a thin urfave/cli action that fills an options struct and
// calls a run function (runPublish, runTag, ...) that tests call directly.
// All errors reach main, where exitCode maps them to an exit status and a
// one-line message (docs/CLI.md lists the codes).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns its exit status.
func run(ctx context.Context, args []string, stdout, stderr *os.File) int {
	g := &globalOptions{stdout: stdout, stderr: stderr}
	app := newApp(g)
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err == nil {
		return exitOK
	}
	code, msg := exitCode(err)
	fmt.Fprintln(stderr, "beaker-dev: "+msg)
	return code
}
