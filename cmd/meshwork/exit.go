package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/internal/suggest"
)

// The exit statuses of every command, documented once for users in
// exitCodesHelp (the root's --help) and in the README.
const (
	// exitOK: the command did what it was asked.
	exitOK = 0
	// exitFailed: the agent refused or failed the request, could not be
	// reached or did not answer in time, or another error at run time.
	exitFailed = 1
	// exitUsage: the command line is wrong (an unknown command or flag, a
	// missing or extra argument, a bad flag value); nothing was sent.
	exitUsage = 2
	// exitOutcomeUnknown: a write that may or may not have been applied;
	// run it again with the --idempotency-key it printed to settle it.
	exitOutcomeUnknown = 3
)

// exitCodesHelp is the part of `meshwork --help` that documents the exit
// statuses and the environment.
const exitCodesHelp = `Exit status:
  0  success
  1  the agent refused or failed the request, could not be reached, or did
     not answer within --timeout; or another error
  2  usage error: an unknown command or flag, a wrong number of arguments,
     a bad flag value; nothing was sent to the agent
  3  a write whose outcome is unknown (policy apply and delete): it may or
     may not have been applied; run it again with the --idempotency-key it
     printed

Environment:
  ` + "MESHWORK_HTTP_ADDR        the agent's API address (--http-addr), default 127.0.0.1:8500\n" +
	"  MESHWORK_HTTP_TIMEOUT     how long to wait for an answer (--timeout), default 30s\n" +
	"  MESHWORK_HTTP_TOKEN       the ACL token's secret (--token)\n" +
	"  MESHWORK_HTTP_TOKEN_FILE  a file holding it (--token-file)"

// usageError is a mistake in the command line: the process exits with
// exitUsage and a hint to see --help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usageErrorf is a usageError with a formatted message.
func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitError ends the process with a code and no further message; the command
// has already said what went wrong.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCode is the exit status for err, the result of a command.
func exitCode(err error) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		return exitUsage
	}
	return exitFailed
}

// strictUsage makes every command of the tree under root report a wrong
// command line as a usageError: a bad flag, a wrong number of arguments,
// and an unknown or missing subcommand, which cobra would otherwise answer
// with the help and status 0. Call it once the tree is complete.
func strictUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands() && !c.Runnable():
			c.Args = cobra.ArbitraryArgs
			c.RunE = unknownSubcommand
		case c.Args != nil:
			check := c.Args
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := check(cmd, args); err != nil {
					return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// unknownSubcommand runs for a command group given no subcommand, or one it
// does not have: a usage error that lists what there is and suggests the
// subcommand a typo meant.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	var names []string
	for _, sub := range cmd.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	if len(args) == 0 {
		return usageErrorf("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", "))
	}
	return usageErrorf("unknown command %q for %q%s; its subcommands are %s",
		args[0], cmd.CommandPath(), commandHint(args[0], names), strings.Join(names, ", "))
}

// commandHint is ` (did you mean "list-peers"?)` for a typo of a command
// name, or for the start of one; "" when name is like none of them.
func commandHint(name string, names []string) string {
	if h := suggest.Hint(name, names); h != "" {
		return h
	}
	for _, n := range names {
		if len(name) >= 3 && strings.HasPrefix(n, name) {
			return fmt.Sprintf(" (did you mean %q?)", n)
		}
	}
	return ""
}
