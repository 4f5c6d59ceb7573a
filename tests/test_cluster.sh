#!/usr/bin/env bash
# shellcheck disable=SC2001,SC2015,SC2016,SC2317
# SPDX-License-Identifier: MIT
# scripts/heca-cluster end to end: three sponsors in their own network namespaces behind tc tbf,
# the demo against them, a network cut and heal, a sponsor killed and restarted, and a `down`
# that leaves nothing behind. Env: HECAD (hecad binary), HECA_CLI (heca binary).
# Exit: 0 pass, 1 fail, 77 skip (not root, no `ip netns`, or the subnet is already in use).
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cluster=$here/../scripts/heca-cluster
hecad=${HECAD:-$here/../build/hecad}
cli=${HECA_CLI:-$here/../build/heca}

skip() { echo "SKIP: $*"; exit 77; }
failures=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; failures=$((failures + 1)); }
fatal() { echo "not ok - $* (giving up)"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
command -v ip >/dev/null 2>&1 || skip "no iproute2 'ip'"
command -v tc >/dev/null 2>&1 || skip "no iproute2 'tc'"
ip netns list >/dev/null 2>&1 || skip "'ip netns' does not work here"
[ -x "$cluster" ] || fatal "$cluster missing or not executable"
[ -x "$hecad" ] || fatal "hecad '$hecad' not executable (set HECAD)"
[ -x "$cli" ] || fatal "heca '$cli' not executable (set HECA_CLI)"

# a distinct prefix; PREFIX-v3 must fit in 15 characters
prefix=hct$$
prefix=${prefix:0:11}
state=/run/heca-cluster/$prefix

probe_ns=$prefix-probe
ip netns add "$probe_ns" 2>/dev/null || skip "cannot create a network namespace here"
ip netns del "$probe_ns"
if [ -n "$(ip -o addr show to 169.254.77.0/24)$(ip -o addr show to 169.254.78.0/24)" ]; then
	skip "169.254.77.0/24 or .78.0/24 is already in use here (another heca-cluster running?)"
fi

down() { "$cluster" down --prefix "$prefix" >/dev/null 2>&1; }
trap down EXIT
trap 'exit 1' INT TERM

# tcp_ok HOST PORT SECS: a TCP connect from the root namespace succeeds within SECS
tcp_ok() { timeout "$3" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }
# status_has REGEX: a line of `status` matches (captured first: grep -q on a pipe + pipefail
# would report the writer's SIGPIPE)
status_has() {
	local st
	st=$("$cluster" status --prefix "$prefix" 2>&1)
	grep -qE "$1" <<<"$st"
}
# host part of HOST:PORT / [HOST]:PORT
host_of() { local h=${1%:*}; h=${h#[}; echo "${h%]}"; }

SECONDS=0

# --- up ---
out=$("$cluster" up 3 --rate 1gbit --prefix "$prefix" --hecad "$hecad" 2>&1)
rc=$?
echo "$out" | sed 's/^/  up: /'
if [ $rc -ne 0 ] && grep -q 'is already used in the root namespace' <<<"$out"; then
	skip "the cluster's subnet is already in use here (another heca-cluster running?)"
fi
[ $rc -eq 0 ] || fatal "heca-cluster up 3 exited $rc"
last=$(echo "$out" | tail -n 1)
[[ $last == "sponsors: "* ]] || fatal "last line of 'up' is not the sponsor list: '$last'"
list=${last#sponsors: }
IFS=, read -r -a sp <<<"$list"
[ ${#sp[@]} -eq 3 ] && ok "up 3 printed 3 sponsors: $list" || bad "expected 3 sponsors, got '$list'"
[ "$(cat "$state/sponsors" 2>/dev/null)" = "$list" ] && ok "state/sponsors matches" ||
	bad "$state/sponsors does not hold '$list'"
[ "$("$cluster" sponsors --prefix "$prefix")" = "$list" ] && ok "'sponsors' prints the list" ||
	bad "'sponsors' does not print the list"
port=${sp[0]##*:}
h1=$(host_of "${sp[0]}")
h2=$(host_of "${sp[1]}")
h3=$(host_of "${sp[2]}")

# idempotence: a second up with the same prefix must refuse and leave the cluster alone
if "$cluster" up 2 --prefix "$prefix" --hecad "$hecad" >/dev/null 2>&1; then
	bad "second 'up' with the same prefix succeeded"
else
	ok "second 'up' with the same prefix refused"
fi

# shaping is on both ends of each link
q1=$(tc qdisc show dev "$prefix-v1")
q2=$(ip netns exec "$prefix-s1" tc qdisc show dev "$prefix-p1")
if grep -q 'tbf.*rate 1Gbit' <<<"$q1" && grep -q 'tbf.*rate 1Gbit' <<<"$q2"; then
	ok "tbf 1gbit on both ends of link 1"
else
	bad "tbf not set on link 1: $q1 / $q2"
fi

# --- status ---
st=$("$cluster" status --prefix "$prefix")
echo "$st" | sed 's/^/  status: /'
n_alive=$(echo "$st" | grep -cE "^[0-9]+ +$prefix-s[0-9]+ .* alive +up\$")
[ "$n_alive" -eq 3 ] && ok "status: 3 sponsors alive, links up" || bad "status shows $n_alive of 3 alive/up"

# exec runs in the sponsor's namespace
a2=$("$cluster" --prefix "$prefix" exec 2 ip -o addr show)
grep -qF "$h2" <<<"$a2" && ok "exec 2 sees $h2" || bad "exec 2 does not see $h2: $a2"

# --- demo across the namespaces ---
demo=$(timeout 40 "$cli" demo --sponsors "$list" --size 32M --local 4M 2>&1)
rc=$?
echo "$demo" | tail -n 3 | sed 's/^/  demo: /'
if [ $rc -eq 0 ] && grep -q 'verified: OK' <<<"$demo"; then
	ok "heca demo --size 32M --local 4M over 3 sponsors verified"
else
	bad "heca demo exited $rc without 'verified: OK'"
	echo "$demo" | tail -n 20
fi

# --- cut / heal ---
"$cluster" cut 2 --prefix "$prefix" >/dev/null || bad "cut 2 failed"
start=$SECONDS
if tcp_ok "$h2" "$port" 3; then
	bad "sponsor 2 still reachable after cut"
else
	ok "sponsor 2 unreachable after cut ($((SECONDS - start)) s)"
fi
tcp_ok "$h1" "$port" 3 && ok "sponsor 1 reachable during the cut" || bad "sponsor 1 unreachable during the cut"
status_has "^2 .* down\$" && ok "status shows link 2 down" ||
	bad "status does not show link 2 down"
"$cluster" heal 2 --prefix "$prefix" >/dev/null || bad "heal 2 failed"
healed=1
for _ in $(seq 1 25); do
	tcp_ok "$h2" "$port" 1 && { healed=0; break; }
	sleep 0.2
done
[ $healed -eq 0 ] && ok "sponsor 2 reachable after heal" || bad "sponsor 2 unreachable after heal"

# --- kill / start ---
"$cluster" kill 3 --prefix "$prefix" >/dev/null || bad "kill 3 failed"
dead=1
for _ in $(seq 1 30); do
	status_has "^3 .* dead +up\$" && { dead=0; break; }
	sleep 0.1
done
[ $dead -eq 0 ] && ok "status shows sponsor 3 dead after kill" || bad "sponsor 3 not dead after kill"
"$cluster" start 3 --prefix "$prefix" >/dev/null && tcp_ok "$h3" "$port" 3 &&
	ok "start 3 brings sponsor 3 back" || bad "start 3 did not bring sponsor 3 back"

# --- down leaves nothing ---
"$cluster" down --prefix "$prefix" >/dev/null 2>&1
rc=$?
[ $rc -eq 0 ] && ok "down exited 0" || bad "down exited $rc"
left_ns=$(ip netns list | awk '{print $1}' | grep -E "^$prefix-" | tr '\n' ' ')
left_links=$(ip -o link show | awk -F': ' '{print $2}' | grep -E "^$prefix-" | tr '\n' ' ')
left_routes=$(ip route show | grep -E '^unreachable 169\.254\.7[78]\.0/24 metric 4242')
[ -z "$left_ns" ] && ok "no namespace left" || bad "namespaces left: $left_ns"
[ -z "$left_links" ] && ok "no link or bridge left" || bad "links left: $left_links"
[ ! -e "$state" ] && ok "state dir removed" || bad "state dir $state left"
[ -z "$left_routes" ] && ok "no guard route left" || bad "routes left: $left_routes"
"$cluster" down --prefix "$prefix" >/dev/null 2>&1 && ok "second down exits 0" || bad "second down failed"
trap - EXIT

echo "test_cluster: $failures failure(s) in ${SECONDS} s"
[ $failures -eq 0 ] || exit 1
exit 0
