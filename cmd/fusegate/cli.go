package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

// env is what every command gets: output streams and the logger that the
// common flags configure.
type env struct {
	stdout, stderr io.Writer
	log            *logrus.Logger
	logLevel       string
	logFormat      string
}

// commands lists the subcommands; each registers itself in an init func.
var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the operation failed
	exitUsage = 2 // bad flags or arguments
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, log: logrus.New()}
	e.log.Out = stderr
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "help":
		switch {
		case len(args) == 1:
			usage(stdout)
			return exitOK
		case len(args) > 2:
			fmt.Fprintf(stderr, "fusegate help: want at most one COMMAND, got %q\n", args[1:])
			return exitUsage
		}
		c, ok := commands[args[1]]
		if !ok {
			fmt.Fprintf(stderr, "fusegate: unknown command %q\n\n", args[1])
			usage(stderr)
			return exitUsage
		}
		return c.run(ctx, e, []string{"--help"})
	case "--version", "-version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "fusegate: unknown command %q\n\n", name)
		usage(stderr)
		return exitUsage
	}
	return c.run(ctx, e, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprint(w, `fusegate serves FUSE file systems and CUSE character devices with a
per-caller permission policy.

Usage: fusegate COMMAND [options] [arguments]

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, "\nRun 'fusegate COMMAND --help' for a command's options.\n")
}

// flagSet makes a FlagSet with the common logging flags and a usage text
// of the form "fusegate NAME SYNOPSIS\n\nDESCRIPTION\n\nOptions:".
func (e *env) flagSet(name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet("fusegate "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&e.logLevel, "log-level", "info", "log level: `LEVEL` is panic, fatal, error, warn, info, debug or trace")
	fs.StringVar(&e.logFormat, "log-format", "text", "log format: text or json")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: %s\n\n%s\n\nOptions:\n", strings.TrimSpace("fusegate "+name+" "+synopsis), strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args allowing options after positional arguments, as
// mount(8) does ("SOURCE DIR -o ro"); "--" ends option parsing. It returns
// the positional arguments, or an exit code to return when parsing ended
// (help asked: 0; bad flags: 2).
func (e *env) parse(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	help := fs.Usage
	fs.Usage = func() {} // the flag package would print it on -help and on errors
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(e.stdout)
				help()
				return nil, exitOK, false
			}
			fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", fs.Name())
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if err := e.setupLog(); err != nil {
		fmt.Fprintf(e.stderr, "fusegate: %v\n", err)
		return nil, exitUsage, false
	}
	return pos, 0, true
}

func (e *env) setupLog() error {
	lvl, err := logrus.ParseLevel(e.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %q is not a level (panic, fatal, error, warn, info, debug, trace)", e.logLevel)
	}
	e.log.SetLevel(lvl)
	switch e.logFormat {
	case "text":
		e.log.SetFormatter(&logrus.TextFormatter{})
	case "json":
		e.log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return fmt.Errorf("--log-format: %q is not text or json", e.logFormat)
	}
	return nil
}

// fail prints an error in the standard form and returns exitFail.
func (e *env) fail(format string, a ...any) int {
	fmt.Fprintf(e.stderr, "fusegate: "+format+"\n", a...)
	return exitFail
}

// usageError prints an argument error and returns exitUsage.
func (e *env) usageError(fs *flag.FlagSet, format string, a ...any) int {
	fmt.Fprintf(e.stderr, "fusegate %s: "+format+"\n", append([]any{strings.TrimPrefix(fs.Name(), "fusegate ")}, a...)...)
	fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", fs.Name())
	return exitUsage
}
