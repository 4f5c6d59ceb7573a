#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Under `heca run`, a process of the program that dies without freeing its pages (a forked
# child that leaves by a raw exit_group system call, one killed with SIGKILL, an image that a
# child exec'd and that leaves by exit_group) has them freed at the sponsors within a couple of
# seconds, not when the sponsors' lease of it ends (30 s), while the parent, which lives on,
# keeps every one of its own pages. Also: the directory where the processes say who they are
# is heca run's alone (mode 0700, files 0600). Env: HECA_CLI, PROG_REAP. Exit: 0 pass, 1 fail.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cli=${HECA_CLI:-$here/../build/heca}
prog=${PROG_REAP:-$here/../build/prog_reap}

failures=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; failures=$((failures + 1)); }

tmp=$(mktemp -d)
runpid=
cleanup() {
	[ -n "$runpid" ] && kill "$runpid" 2>/dev/null
	exec 3>&- 2>/dev/null
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# MiB the sponsors of a list hold for everyone, summed (from `heca status --sponsors`).
used_mib() {
	"$HECA_CLI_REAL" status --sponsors "$1" | awk '
		NR > 1 { v = $(NF - 1); u = $NF
			 if (u == "B") v /= 1048576; else if (u == "KiB") v /= 1024
			 else if (u == "GiB") v *= 1024; else if (u == "TiB") v *= 1048576
			 s += v }
		END { printf "%.1f\n", s }'
}
HECA_CLI_REAL=$cli

# await WORD: wait (at most 60 s) for a line starting with WORD in the program's output.
await() {
	for _ in $(seq 600); do
		grep -q "^$1" "$tmp/out" && return 0
		kill -0 "$runpid" 2>/dev/null || break
		sleep 0.1
	done
	return 1
}

# le A B: A <= B, as decimals.
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# one MODE: a parent of 64 MiB forks a child that fills 96 MiB more (budget 16 MiB, two
# spawned sponsors, two copies of each page), then the child dies as MODE says.
one() {
	local mode=$1 list u0 u1 u2 t0 t
	rm -f "$tmp/out" "$tmp/in"
	mkfifo "$tmp/in"
	# The variables the program's processes get, then the program itself.
	"$cli" run --local 16M -- sh -c 'echo "sponsors $HECA_SPONSORS"; echo "rundir ${HECA_RUN_DIR:-}"
		exec "$0" "$@"' "$prog" "$mode" 64 96 <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
	runpid=$!
	exec 3>"$tmp/in"
	if ! await "parent filled"; then
		bad "$mode: the program did not start: $(cat "$tmp/out" "$tmp/err")"
		return
	fi
	list=$(sed -n 's/^sponsors //p' "$tmp/out")
	u0=$(used_mib "$list")
	if [ "$mode" = exit_group ]; then
		# Who may read or write what the processes write there: heca run's user only.
		local dir files
		dir=$(sed -n 's/^rundir //p' "$tmp/out")
		files=$(find "$dir" -mindepth 1 -name '*.id' 2>/dev/null | wc -l)
		if [ -n "$dir" ] && [ "$(stat -c %a "$dir")" = 700 ] && [ "$files" -ge 1 ] &&
			[ -z "$(find "$dir" -mindepth 1 ! -perm 600)" ] &&
			[ -z "$(find "$dir" -mindepth 1 ! -user "$(id -u)")" ]; then
			ok "the processes say who they are in $dir, mode 0700, $files file(s) of mode 0600"
		else
			bad "the directory of the processes' ids: '$dir' ($(stat -c %a "$dir" 2>&1)), $(ls -l "$dir" 2>&1)"
		fi
	fi
	echo go >&3
	if ! await "child filled"; then
		bad "$mode: the child did not fill its memory: $(cat "$tmp/out" "$tmp/err")"
		return
	fi
	u1=$(used_mib "$list")
	echo end >&3
	if ! await "child gone"; then
		bad "$mode: the child did not end: $(cat "$tmp/out" "$tmp/err")"
		return
	fi
	t0=$(date +%s.%N)
	# The child's pages (its copy of the parent's and its own) go; the parent's stay.
	for _ in $(seq 100); do
		u2=$(used_mib "$list")
		le "$u2" "$(awk -v a="$u0" 'BEGIN { print a + 2 }')" && break
		# At most 5 s.
		le 5 "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" && break
		sleep 0.1
	done
	t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	echo check >&3
	exec 3>&-
	wait "$runpid"
	local rc=$?
	runpid=
	if ! le "$(awk -v a="$u0" 'BEGIN { print a + 100 }')" "$u1"; then
		bad "$mode: the child's pages never reached the sponsors (before $u0 MiB, with the child $u1 MiB)"
	elif ! le "$u2" "$(awk -v a="$u0" 'BEGIN { print a + 2 }')"; then
		bad "$mode: the sponsors still hold $u2 MiB ${t} s after the child died (the parent alone $u0 MiB, with the child $u1 MiB)"
	elif [ "$rc" != 0 ] || ! grep -q "^parent OK" "$tmp/out"; then
		bad "$mode: exit $rc: $(grep -E '^(child gone|parent)' "$tmp/out") $(tail -5 "$tmp/err")"
	elif [ "$mode" = sigkill ] && ! grep -q "^child gone 9$" "$tmp/out"; then
		bad "$mode: the child did not die of SIGKILL: $(grep '^child gone' "$tmp/out")"
	elif [ "$mode" != sigkill ] && ! grep -q "^child gone 0$" "$tmp/out"; then
		bad "$mode: the child failed: $(grep '^child gone' "$tmp/out") $(tail -5 "$tmp/err")"
	else
		ok "$mode: sponsors held $u0 MiB for the parent, $u1 MiB with the child, $u2 MiB ${t} s after it died; the parent read back all of its own"
	fi
}

one exit_group
one sigkill
one exec

echo "$failures failure(s)"
[ "$failures" = 0 ]
