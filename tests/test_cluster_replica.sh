#!/bin/bash
# SPDX-License-Identifier: MIT
# Ten sponsors in their own network namespaces: a region spread over them with two copies is
# written and verified while one sponsor is killed (kill -9) and, later, another one's link is
# cut and healed. Every page must verify, the copies must be restored, and the cut sponsor
# must be used again once its link is back. Exit 0 pass, 1 fail, 77 skip (not root, no netns).
set -u

here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/../scripts/heca-cluster
cli=${HECA_CLI:-$here/../build/heca}
export HECAD=${HECAD:-$here/../build/hecad}
prefix=hr$(($$ % 100000))
log=$(mktemp -d)

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
ip netns list >/dev/null 2>&1 || { echo "SKIP: no ip netns"; exit 77; }

start=$(date +%s%N)
fail() {
	echo "FAIL after $((($(date +%s%N) - start) / 1000000)) ms: $*"
	if [ -n "${demo:-}" ]; then
		"$cli" status --pid "$demo" 2>&1 | tail -14
		if ! kill -0 "$demo" 2>/dev/null; then
			wait "$demo"
			echo "the demo ended with status $?"
		fi
	fi
	for f in "$log"/*.out; do echo "--- $f"; tail -20 "$f"; done
	exit 1
}
cleanup() {
	[ -n "${demo:-}" ] && kill "$demo" 2>/dev/null
	"$cluster" down --prefix "$prefix" >/dev/null 2>&1
	rm -rf "$log"
}
trap cleanup EXIT

out=$("$cluster" up 10 --prefix "$prefix" --capacity 48M --rate 1gbit --hecad "$HECAD" 2>&1)
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

# status_of PID FIELD: a key=value field of a running demo's status.
field() { "$cli" status --pid "$1" 2>/dev/null | sed -n "s/^$2=//p"; }
# sponsor_line PID ADDR: that sponsor's line in the demo's status.
sponsor_line() {
	local all
	all=$("$cli" status --pid "$1" 2>/dev/null)
	echo "$all" | grep " $2 "
}
# wait_state PID ADDR STATE: until that sponsor's line says STATE (up to 20 s); 0 if it did.
wait_state() {
	local line
	for _ in $(seq 400); do
		line=$(sponsor_line "$1" "$2")
		case "$line" in *" $3 "*) return 0 ;; esac
		sleep 0.05
	done
	echo "last status line: $line"
	return 1
}

run_demo() { # name: writes and verifies 64 MiB with 8 MiB local, two copies, many rounds
	"$cli" demo --sponsors "$sponsors" --size 64M --local 8M --threads 4 --replicas 2 \
		--rounds "$2" >"$log/$1.out" 2>&1 &
	demo=$!
	for _ in $(seq 100); do
		[ -S "/run/heca/$demo.sock" ] && return
		sleep 0.1
	done
	fail "$1: demo has no control socket"
}

wait_demo() {
	wait "$demo"
	local rc=$?
	demo=
	grep -q "verified: OK" "$log/$1.out" && [ $rc -eq 0 ] || fail "$1: demo exit $rc"
	grep -E "^(write|verified)" "$log/$1.out"
}

# 1. kill -9 of sponsor 3 under load.
run_demo kill 8
sleep 2
victim=$(echo "$sponsors" | cut -d, -f3)
t0=$(date +%s%N)
"$cluster" kill 3 --prefix "$prefix" >/dev/null || fail "kill 3"
wait_state "$demo" "$victim" down || fail "kill: sponsor 3 not seen down"
t1=$(date +%s%N)
# Copies are restored when a poll finds nothing short of a copy and nothing moving. (Writes
# that were in flight to the dead sponsor fail a little later and can briefly make a stripe
# short again, which repair fixes in turn: the first such poll is the figure.)
ok=0
for _ in $(seq 600); do
	u=$(field "$demo" under_replicated)
	if [ "$u" = 0 ] && [ "$(field "$demo" moving)" = 0 ]; then
		ok=1
		break
	fi
	sleep 0.05
done
[ $ok = 1 ] || fail "kill: copies not restored (under_replicated=$u)"
t2=$(date +%s%N)
echo "kill -9: noticed in $(((t1 - t0) / 1000000)) ms, two copies again after $(((t2 - t0) / 1000000)) ms"
wait_demo kill
"$cluster" start 3 --prefix "$prefix" >/dev/null || fail "start 3"

# 2. network cut of sponsor 2, then heal: detected within the bound, used again afterwards.
run_demo cut 30
sleep 2
cut=$(echo "$sponsors" | cut -d, -f2)
t0=$(date +%s%N)
"$cluster" cut 2 --prefix "$prefix" >/dev/null || fail "cut 2"
wait_state "$demo" "$cut" down || fail "cut: sponsor 2 not seen down"
t1=$(date +%s%N)
echo "network cut: noticed in $(((t1 - t0) / 1000000)) ms (heartbeat 250 ms + 2000 ms detect)"
[ $(((t1 - t0) / 1000000)) -le 6000 ] || fail "cut detected too late"
sleep 1
"$cluster" heal 2 --prefix "$prefix" >/dev/null || fail "heal 2"
t0=$(date +%s%N)
line=
for _ in $(seq 300); do
	line=$(sponsor_line "$demo" "$cut")
	echo "$line" | grep -q " up " && ! echo "$line" | grep -q "stripes=0$" && break
	sleep 0.05
done
t1=$(date +%s%N)
echo "after heal ($(((t1 - t0) / 1000000)) ms): $line"
echo "$line" | grep -q " up " || fail "heal: sponsor 2 not back"
echo "$line" | grep -q "stripes=0$" && fail "heal: sponsor 2 holds no stripe"
wait_demo cut
echo "test_cluster_replica: all passed"
