#!/usr/bin/env bash
# make demo: livemig's main job end to end, on storage the demo makes and removes itself.
# A writer appends a numbered, timestamped line every 10 ms to a journal on an "old"
# loop-mounted ext4 (its cwd is there too); livemig mirrors it to a "new" ext4 and cuts
# over with --remount; the journal then proves that no line was lost or doubled and
# that the writer goes on writing on the new storage.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "make demo needs root (mount, losetup, ptrace)" >&2; exit 2; }
livemig=${LIVEMIG:-$(pwd)/bin/livemig}
work=$(mktemp -d /tmp/livemig-demo.XXXXXX)
writer=

cleanup() {
	[ -n "$writer" ] && kill "$writer" 2>/dev/null && wait "$writer" 2>/dev/null || true
	for m in "$work/old" "$work/new"; do
		for _ in $(seq 50); do # the writer's last children may take a moment to exit
			mountpoint -q "$m" || break
			umount "$m" 2>/dev/null || sleep 0.1
		done
	done
	rm -rf "$work"
}
trap cleanup EXIT

echo "== making old and new storage (64 MiB ext4 images, loop-mounted) under $work"
for fs in old new; do
	truncate -s 64M "$work/$fs.img"
	mkfs.ext4 -q -F "$work/$fs.img"
	mkdir "$work/$fs"
	mount -o loop "$work/$fs.img" "$work/$fs"
done
echo "old: $(findmnt -no SOURCE "$work/old")   new: $(findmnt -no SOURCE "$work/new")"

echo "== starting a writer on the old storage: a timestamped line every 10 ms"
(cd "$work/old" && exec bash -c 'n=0; while :; do printf "%d %s\n" $n "$(date +%s.%N)" >> journal; n=$((n+1)); sleep 0.01; done') &
writer=$!
sleep 1

echo "== livemig cutover --remount $work/old $work/new"
"$livemig" cutover --remount "$work/old" "$work/new"
sleep 1
kill "$writer"; wait "$writer" 2>/dev/null || true; writer=

echo "== after the cutover"
echo "mounted at $work/old now: $(findmnt -no SOURCE "$work/old") (the new image)"
awk '
	$1 != NR - 1 { printf "line %d holds %s: a line was lost or doubled\n", NR, $1; bad = 1; exit 1 }
	NR > 1 && $2 - prev > gap { gap = $2 - prev; at = NR - 1 }
	{ prev = $2 }
	END { if (!bad) printf "journal: %d lines, numbered 0..%d with none lost or doubled; largest gap %.1f ms (after line %d)\n", NR, NR - 1, gap * 1000, at }
' "$work/old/journal"
echo "== demo done; cleaning up"
