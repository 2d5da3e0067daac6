#!/usr/bin/env bash
# make bench-sync: the mirror's speed against rsync, cp -a and lsyncd, all on tmpfs, in
# one run on the same machine. Prints a markdown table (medians of several runs).
#
#   RUNS=5 BIG_RUNS=3 bash bench/sync.sh
#
# Needs root (it mounts a tmpfs), rsync, and lsyncd for the lag rows' comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-sync needs root (it mounts a tmpfs)" >&2; exit 1; }
RUNS=${RUNS:-5}
BIG_RUNS=${BIG_RUNS:-3}
export PATH="$PATH:/usr/local/go/bin"

go build -o bin/livemig ./cmd/livemig
go build -o bin/synclag ./bench/synclag
LIVEMIG=$PWD/bin/livemig
SYNCLAG=$PWD/bin/synclag

work=$(mktemp -d /tmp/livemig-bench.XXXXXX)
mount -t tmpfs -o size=12g livemig-bench "$work"
bg_pid=
cleanup() {
	if [ -n "$bg_pid" ]; then kill "$bg_pid" 2>/dev/null || true; wait "$bg_pid" 2>/dev/null || true; fi
	umount "$work" 2>/dev/null || umount -l "$work"
	rmdir "$work"
}
trap cleanup EXIT

# seconds CMD...: wall time of one command, in seconds.
seconds() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# timed N PREP CMD...: median wall time of N runs of CMD, each after running PREP.
timed() {
	local n=$1 prep=$2
	shift 2
	for _ in $(seq "$n"); do
		eval "$prep"
		seconds "$@"
	done | median
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

src=$work/src dst=$work/dst
echo "making data on tmpfs ($work)..." >&2
mkdir -p "$src/tree"
for d in $(seq -w 0 199); do
	mkdir "$src/tree/dir$d"
	head -c $((100 * 4096)) /dev/urandom | (cd "$src/tree/dir$d" && split -b 4096 -a 3 -d - f)
done
mkdir -p "$src/big2g"
head -c 2G /dev/urandom >"$src/big2g/big"

rows=()
row() { rows+=("$(printf '| %s | %s | %s | %s | %s |' "$@")"); }

# 1. First pass, 20,000 files of 4 KiB in 200 directories.
echo "first pass, 20k files..." >&2
lm=$(timed "$RUNS" 'rm -rf "$dst"' "$LIVEMIG" sync --once "$src/tree" "$dst")
rs=$(timed "$RUNS" 'rm -rf "$dst"' rsync -a "$src/tree/" "$dst/")
cp=$(timed "$RUNS" 'rm -rf "$dst"' cp -a "$src/tree" "$dst")
row "first pass, 20,000 x 4 KiB in 200 dirs (files/s)" "$(rate 20000 "$lm") ($lm s)" \
	"rsync -a $(rate 20000 "$rs") ($rs s); cp -a $(rate 20000 "$cp") ($cp s)" \
	"$(ratio "$rs" "$lm") rsync, $(ratio "$cp" "$lm") cp -a" ">= 2x rsync, >= 1x cp -a"

# 3. Second pass over the same tree, nothing changed.
echo "second pass, nothing changed..." >&2
rm -rf "$dst" && "$LIVEMIG" sync --once "$src/tree" "$dst" >/dev/null 2>&1
lm2=$(timed "$RUNS" ':' "$LIVEMIG" sync --once "$src/tree" "$dst")
rs2=$(timed "$RUNS" ':' rsync -a "$src/tree/" "$dst/")
row2="$(printf '| %s | %s | %s | %s | %s |' "second pass, 20k tree, nothing changed (s)" "$lm2" "rsync -a $rs2" "$(ratio "$rs2" "$lm2")" ">= 3x rsync")"
rm -rf "$dst"

# 2. First pass, one 2 GiB file.
echo "first pass, one 2 GiB file..." >&2
lmb=$(timed "$BIG_RUNS" 'rm -rf "$dst"' "$LIVEMIG" sync --once "$src/big2g" "$dst")
cpb=$(timed "$BIG_RUNS" 'rm -rf "$dst"; mkdir "$dst"' cp "$src/big2g/big" "$dst/big")
rsb=$(timed "$BIG_RUNS" 'rm -rf "$dst"' rsync -a "$src/big2g/" "$dst/")
row "first pass, one 2 GiB file (MB/s)" "$(rate 2147.48 "$lmb") ($lmb s)" \
	"cp $(rate 2147.48 "$cpb") ($cpb s); rsync -a $(rate 2147.48 "$rsb") ($rsb s)" \
	"$(ratio "$cpb" "$lmb") cp, $(ratio "$rsb" "$lmb") rsync" ">= 1x cp, >= 2x rsync"
rows+=("$row2")

# 4. 4 KiB changed in the middle of the 2 GiB file (DST in sync before each run).
echo "delta, 4 KiB in 2 GiB..." >&2
rm -rf "$dst" && "$LIVEMIG" sync --once "$src/big2g" "$dst" >/dev/null 2>&1
poke='head -c 4096 /dev/urandom | dd of="$src/big2g/big" bs=4096 seek=$((1 << 18)) conv=notrunc status=none'
lmd=$(timed "$BIG_RUNS" "$poke" "$LIVEMIG" sync --once "$src/big2g" "$dst")
eval "$poke"
written=$("$LIVEMIG" sync --once --json "$src/big2g" "$dst" | awk -F'[:,]' '/"bytes_written"/ { gsub(/ /, "", $2); print $2 }')
rsd=$(timed "$BIG_RUNS" "$poke" rsync -a --inplace --no-whole-file "$src/big2g/" "$dst/")
row "4 KiB changed in the middle of a 2 GiB file (s; bytes written at DST)" "$lmd s; $written bytes" \
	"rsync --inplace --no-whole-file $rsd s" "$(ratio "$rsd" "$lmd")" "<= 1 MiB written; >= 3x rsync"
rm -rf "$dst" "$src/big2g"

# 5-7. Follow lag: a running mirror, a writer at SRC, a reader polling DST.
lagsrc=$work/lagsrc lagdst=$work/lagdst
lag_rows() { # NAME: runs the three lag measurements against the mirror now running
	"$SYNCLAG" -mode small -n 500 -rate 100 -src "$lagsrc" -dst "$lagdst" | tee -a "$work/lag-$1" >&2
	"$SYNCLAG" -mode append -n 30 -src "$lagsrc" -dst "$lagdst" | tee -a "$work/lag-$1" >&2
	for _ in $(seq "$BIG_RUNS"); do
		"$SYNCLAG" -mode burst -n 1000 -src "$lagsrc" -dst "$lagdst" | tee -a "$work/lag-$1" >&2
	done
}
start_lag_tree() {
	rm -rf "$lagsrc" "$lagdst"
	mkdir -p "$lagsrc"
	head -c 200M /dev/urandom >"$lagsrc/big"
}
wait_mirrored() {
	for _ in $(seq 600); do
		[ "$(stat -c %s "$lagdst/big" 2>/dev/null || echo 0)" = "$(stat -c %s "$lagsrc/big")" ] && return 0
		sleep 0.1
	done
	echo "the mirror did not start" >&2
	return 1
}
field() { grep "^$2 " "$work/lag-$1" | sed -E "s/.*$3=([0-9.]+).*/\1/" | median; }

echo "follow lag, livemig..." >&2
start_lag_tree
"$LIVEMIG" sync "$lagsrc" "$lagdst" 2>"$work/livemig.log" &
bg_pid=$!
wait_mirrored
lag_rows livemig
kill -TERM "$bg_pid"
wait "$bg_pid" || true
bg_pid=

have_lsyncd=false
if command -v lsyncd >/dev/null; then
	have_lsyncd=true
	echo "follow lag, lsyncd (delay = 0)..." >&2
	start_lag_tree
	cat >"$work/lsyncd.lua" <<-EOF
		settings { nodaemon = true, logfile = "$work/lsyncd.log", statusFile = "$work/lsyncd.status", insist = true }
		sync { default.rsync, source = "$lagsrc", target = "$lagdst", delay = 0, rsync = { archive = true } }
	EOF
	lsyncd "$work/lsyncd.lua" >/dev/null 2>&1 &
	bg_pid=$!
	wait_mirrored
	lag_rows lsyncd
	kill -TERM "$bg_pid"
	wait "$bg_pid" || true
	bg_pid=
fi
peer() { # NAME MODE FIELD
	if $have_lsyncd; then echo "lsyncd (delay = 0) $(field lsyncd "$2" "$3") ms"; else echo "lsyncd not installed"; fi
}
row "follow lag, small file at 100 files/s (p50 / p99 ms)" \
	"$(field livemig small p50) / $(field livemig small p99)" \
	"lsyncd $(if $have_lsyncd; then echo "$(field lsyncd small p50) / $(field lsyncd small p99)"; else echo "not installed"; fi)" \
	"" "p50 <= 5 ms, p99 <= 50 ms"
row "follow lag, 4 KiB appended to a 200 MB file (p50 / max ms)" \
	"$(field livemig append p50) / $(field livemig append max)" "$(peer lsyncd append p50) (p50)" "" "<= 20 ms"
row "follow lag, burst of 1,000 new files until all at DST (ms)" \
	"$(field livemig burst p50)" "$(peer lsyncd burst p50)" "" "<= 200 ms"

echo
echo "livemig sync vs peers on tmpfs, $(nproc) CPUs, medians of $RUNS runs ($BIG_RUNS for 2 GiB and bursts); $(date -u +%Y-%m-%d)"
echo
echo "| work | livemig | peers | livemig faster by | target |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
