// Package bench measures livemig the way a user meets it: downtime windows, copy speed
// and lag, side by side with the manual recipes, rsync and lsyncd.
package bench
