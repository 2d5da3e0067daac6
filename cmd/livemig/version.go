package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:    "version",
		summary: "print the version of livemig",
		usage:   "version",
		setup: func(fs *pflag.FlagSet) func([]string) error {
			return func(args []string) error {
				if len(args) != 0 {
					return usagef("version takes no arguments")
				}
				v := "(devel)"
				if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
					v = bi.Main.Version
				}
				fmt.Fprintln(os.Stdout, "livemig", v)
				return nil
			}
		},
	})
}
