#!/bin/bash
# SPDX-License-Identifier: MIT
# Network cuts under load: six sponsors in their own network namespaces, demos writing and
# verifying a region with two copies over them, and rounds in which one sponsor's link is cut
# (1 to 6 s, past detection) and healed. After each heal the sponsor must be up again and
# every stripe back to two copies before the next cut; every demo must verify every page and
# nothing may be lost. HECA_SOAK_SEED repeats the choice of sponsors and cut lengths.
# Exit 0 pass, 1 fail, 77 skip (not root, no netns).
set -u

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/../scripts/heca-cluster
cli=${HECA_CLI:-$here/../build/heca}
export HECAD=${HECAD:-$here/../build/hecad}
prefix=hs$(($$ % 100000))
log=$(mktemp -d)
nsp=6
cuts=${HECA_SOAK_CUTS:-5}

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
ip netns list >/dev/null 2>&1 || { echo "SKIP: no ip netns"; exit 77; }

seed=${HECA_SOAK_SEED:-$(($$ * 7919 % 32768))}
RANDOM=$seed
echo "seed $seed (HECA_SOAK_SEED=$seed repeats the cuts)"

start=$(date +%s%N)
ms() { echo $((($(date +%s%N) - start) / 1000000)); }
fail() {
	echo "FAIL after $(ms) ms: $*"
	if [ -n "${demo:-}" ]; then
		"$cli" status --pid "$demo" 2>&1 | tail -14
		if ! kill -0 "$demo" 2>/dev/null; then
			wait "$demo"
			echo "the demo ended with status $?"
		fi
	fi
	"$cluster" status --prefix "$prefix"
	# A demo that stopped making progress: where its threads are.
	if [ -n "${demo:-}" ] && kill -0 "$demo" 2>/dev/null && command -v gdb >/dev/null; then
		gdb -p "$demo" -batch -ex 'thread apply all bt 12' >"$log/gdb.txt" 2>&1
	fi
	for i in $(seq $nsp); do cp "/run/heca-cluster/$prefix/s$i.log" "$log/" 2>/dev/null; done
	for f in "$log"/*.out; do echo "--- $f"; grep -v "^  [a-z]*  *[0-9.]*%" "$f" | tail -20; done
	echo "logs kept in $log"
	keep=1
	exit 1
}
keep=0
cleanup() {
	[ -n "${demo:-}" ] && kill "$demo" 2>/dev/null
	"$cluster" down --prefix "$prefix" >/dev/null 2>&1
	[ $keep = 1 ] || rm -rf "$log"
}
trap cleanup EXIT

out=$("$cluster" up $nsp --prefix "$prefix" --capacity 64M --rate 1gbit --hecad "$HECAD" 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
	echo "$out"
	# Another cluster holds the addresses (a concurrent run): not this test's failure.
	echo "$out" | grep -Eq "in use|already used" && { echo "SKIP: address range in use"; exit 77; }
	fail "heca-cluster up"
fi
sponsors=$(echo "$out" | sed -n 's/^sponsors: //p' | tail -1)
[ -n "$sponsors" ] || fail "no sponsor list"
echo "sponsors: $sponsors"

# field PID FIELD: a key=value field of a running demo's status.
field() { "$cli" status --pid "$1" 2>/dev/null | sed -n "s/^$2=//p"; }
# sponsor_line PID ADDR: that sponsor's line in the demo's status.
sponsor_line() { "$cli" status --pid "$1" 2>/dev/null | grep " $2 "; }
# alive PID: the demo still answers (it ends on its own after its rounds).
alive() { "$cli" status --pid "$1" >/dev/null 2>&1; }
# wait_state PID ADDR STATE SECS: until that sponsor's line says STATE; 0 if it did, 2 if the
# demo ended meanwhile.
wait_state() {
	local line
	for _ in $(seq $(($4 * 20))); do
		alive "$1" || return 2
		line=$(sponsor_line "$1" "$2")
		case "$line" in *" $3 "*) return 0 ;; esac
		sleep 0.05
	done
	echo "last status line: $line"
	return 1
}
# wait_healthy PID SECS: until no stripe is short of a copy and nothing moves; 0 if so, 2 if
# the demo ended meanwhile.
wait_healthy() {
	local u m l
	for _ in $(seq $(($2 * 20))); do
		alive "$1" || return 2
		u=$(field "$1" under_replicated)
		m=$(field "$1" moving)
		l=$(field "$1" lost_stripes)
		[ "${l:-0}" = 0 ] || { echo "lost_stripes=$l"; return 1; }
		[ "$u" = 0 ] && [ "$m" = 0 ] && return 0
		sleep 0.05
	done
	echo "under_replicated=$u moving=$m"
	return 1
}

demo_args=(--sponsors "$sponsors" --size 64M --local 8M --threads 4 --replicas 2)

# How long one round takes here, so that a demo outlasts a few cuts.
t0=$(date +%s%N)
"$cli" demo "${demo_args[@]}" --rounds 2 >"$log/calibrate.out" 2>&1 ||
	fail "calibration demo"
grep -q "verified: OK" "$log/calibrate.out" || fail "calibration demo did not verify"
round_ms=$((($(date +%s%N) - t0) / 2000000 + 1))
# A cut, its heal and the repair take up to ~12 s: a demo lasts a few of them.
rounds=$((40000 / round_ms + 2))
echo "one round takes ~$round_ms ms: demos of $rounds rounds"
demos=0

start_demo() {
	demos=$((demos + 1))
	"$cli" demo "${demo_args[@]}" --rounds "$rounds" >"$log/demo$demos.out" 2>&1 &
	demo=$!
	for _ in $(seq 100); do
		[ -S "/run/heca/$demo.sock" ] && return
		sleep 0.1
	done
	fail "demo $demos has no control socket"
}

# end_demo: wait for the running demo; it must have verified every page and lost none.
end_demo() {
	local rc d=$demo lost
	lost=$(field "$demo" lost_stripes)
	wait "$demo"
	rc=$?
	demo=
	grep -q "verified: OK" "$log/demo$demos.out" && [ $rc -eq 0 ] ||
		{ demo=$d; fail "demo $demos exit $rc"; }
	grep -q "lost pages 0," "$log/demo$demos.out" || fail "demo $demos lost pages"
	[ "${lost:-0}" = 0 ] || fail "demo $demos: lost_stripes=$lost"
	echo "demo $demos: $(grep -E "^verified" "$log/demo$demos.out")," \
		"$(grep -oE "lost pages [0-9]+, write-back errors [0-9]+" "$log/demo$demos.out")"
}

start_demo
sleep 2

# check WHAT RC: fail unless RC is 0; 2 (the demo ended during the cut) repeats the cut.
check() {
	[ "$2" = 0 ] && return 0
	[ "$2" = 2 ] && return 1
	fail "$1"
}

c=1
while [ $c -le "$cuts" ]; do
	# A demo that has ended must have verified: the next cut is under a new one.
	if ! alive "$demo"; then
		end_demo
		start_demo
		sleep 2
	fi
	i=$((RANDOM % nsp + 1))
	len=$((RANDOM % 6 + 1))
	addr=$(echo "$sponsors" | cut -d, -f$i)
	t0=$(date +%s%N)
	"$cluster" cut "$i" --prefix "$prefix" >/dev/null || fail "cut $i"
	noticed=-
	rc=0
	if [ "$len" -ge 3 ]; then
		# Past detection (heartbeats 250 ms + 2000 ms): the demander must see it down.
		wait_state "$demo" "$addr" down 6
		rc=$?
		noticed=$((($(date +%s%N) - t0) / 1000000))
	fi
	while [ $rc = 0 ] && [ $((($(date +%s%N) - t0) / 1000000)) -lt $((len * 1000)) ]; do
		sleep 0.1
	done
	"$cluster" heal "$i" --prefix "$prefix" >/dev/null || fail "heal $i"
	check "cut $c: sponsor $i not seen down" $rc || continue
	t1=$(date +%s%N)
	wait_state "$demo" "$addr" up 30
	check "cut $c: sponsor $i not back up after heal" $? || continue
	t2=$(date +%s%N)
	wait_healthy "$demo" 60
	check "cut $c: copies not restored after heal" $? || continue
	t3=$(date +%s%N)
	echo "cut $c: sponsor $i ($addr) cut ${len} s, seen down after $noticed ms;" \
		"up $(((t2 - t1) / 1000000)) ms after heal, two copies again after" \
		"$(((t3 - t1) / 1000000)) ms"
	c=$((c + 1))
	sleep 1
done

end_demo
echo "test_soak_cluster: all passed, $cuts cuts under $demos demos ($(ms) ms)"
