package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// reorderArgs lets flags come before or after positional arguments, as in
// git: urfave/cli/v2 stops parsing flags at the first positional argument.
// It moves global flags in front of the command name and command flags in
// front of the positional arguments, keeping each flag's value with it.
// "--" ends flags: everything after it stays positional.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	global := flagArity(app.Flags)
	var globals, path, flags, positional []string
	var cmd *cli.Command
	commands := app.Commands
	var local map[string]bool
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if isFlag(a) {
			name, hasValue := flagName(a)
			takes, isLocal := local[name]
			dst := &flags
			if !isLocal {
				if g, isGlobal := global[name]; isGlobal {
					takes, dst = g, &globals
				} else if cmd == nil {
					dst = &globals // unknown: let the parser complain where it is
				}
			}
			*dst = append(*dst, a)
			if takes && !hasValue && i+1 < len(args) {
				i++
				*dst = append(*dst, args[i])
			}
			continue
		}
		if len(positional) == 0 {
			if sub := findCommand(commands, a); sub != nil {
				cmd = sub
				path = append(path, a)
				commands = sub.Subcommands
				local = flagArity(sub.Flags)
				local["help"], local["h"] = false, false
				continue
			}
		}
		positional = append(positional, a)
	}
	out := append([]string{args[0]}, globals...)
	out = append(out, path...)
	out = append(out, flags...)
	for _, p := range positional {
		if strings.HasPrefix(p, "-") {
			out = append(out, "--")
			break
		}
	}
	return append(out, positional...)
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// flagName returns a flag argument's name and whether it carries its value
// ("--port=80").
func flagName(a string) (string, bool) {
	a = strings.TrimLeft(a, "-")
	if i := strings.IndexByte(a, '='); i >= 0 {
		return a[:i], true
	}
	return a, false
}

// flagArity maps every name of every flag to whether it takes a value.
func flagArity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		takes := true
		if tv, ok := f.(interface{ TakesValue() bool }); ok {
			takes = tv.TakesValue()
		}
		for _, n := range f.Names() {
			m[n] = takes
		}
	}
	return m
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
