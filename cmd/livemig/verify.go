package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	livesync "github.com/livemig/livemig/sync"
	"github.com/spf13/pflag"
)

func init() {
	register(&command{
		name:    "verify",
		summary: "compare SRC and DST (metadata and content); exit 0 only when identical",
		usage: `verify SRC DST [--json]

  livemig verify /srv/data /mnt/new/data

Lists every difference (type, mode, owner, mtime, size, content, xattrs, symlink
target, device, hardlinks, missing or extra entries) on stdout.
Exit status: 0 identical; 1 different; 2 bad usage or input.`,
		setup: func(fs *pflag.FlagSet) func([]string) error {
			asJSON := fs.Bool("json", false, "print the differences as JSON on stdout")
			return func(args []string) error {
				if len(args) != 2 {
					return usagef("verify needs SRC and DST (got %d arguments)", len(args))
				}
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				diffs, err := livesync.Verify(ctx, args[0], args[1])
				var in *livesync.InputError
				if errors.As(err, &in) {
					return usagef("%v", in)
				}
				if err != nil {
					return err
				}
				if *asJSON {
					enc := json.NewEncoder(os.Stdout)
					enc.SetIndent("", "  ")
					_ = enc.Encode(struct {
						Identical   bool                  `json:"identical"`
						Differences []livesync.Difference `json:"differences"`
					}{len(diffs) == 0, append([]livesync.Difference{}, diffs...)})
				} else {
					for _, d := range diffs {
						fmt.Println(d)
					}
				}
				if len(diffs) > 0 {
					return exitError{exitFailed, fmt.Errorf("%d differences", len(diffs))}
				}
				return nil
			}
		},
	})
}
