package main

import (
	"os"

	"github.com/spf13/pflag"

	"github.com/livemig/livemig/cutover"
)

func init() {
	register(&command{
		name:    cutover.GuardianSubcommand,
		hidden:  true,
		summary: "internal: started by livemig itself to resume frozen processes should livemig die",
		usage: `guardian   (not for direct use)

livemig starts this as a separate process before it freezes anything, tells it on stdin
of every process it stops, and resumes them itself. If livemig dies before that (kill -9
at any phase) the guardian sees its stdin close and resumes every process it was told of.`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			return func(args []string) error {
				if len(args) != 0 {
					return usagef("guardian takes no arguments")
				}
				if err := cutover.RunGuardian(os.Stdin, os.Stdout, os.Stderr); err != nil {
					return exitError{code: exitFailed, err: err}
				}
				return nil
			}
		},
	})
}
