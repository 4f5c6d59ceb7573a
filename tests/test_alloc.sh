#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `heca run` with each allocator a program may use: glibc's malloc, and jemalloc, tcmalloc and
# mimalloc linked into the program or preloaded after heca, each also with the options that
# make it map memory while it initialises. The workload (tests/progs/prog_alloc.c) checks
# malloc_usable_size and realloc on thousands of small blocks and every page of 256 MiB of big
# ones under a 48 MiB budget; its output must match a run without heca, heca must have written
# pages back, and every run must end within its timeout (a deadlock fails it).
# Env: HECAD, HECA_CLI, PROG_ALLOC, HECA_ALLOC_PROGS ("name=path,..."). Exit: 0 pass, 1 fail.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cli=${HECA_CLI:-$here/../build/heca}
prog=${PROG_ALLOC:-$here/../build/prog_alloc}
libdir=/usr/lib/x86_64-linux-gnu

failures=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; failures=$((failures + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

. "$here/lib.sh"

# case NAME ENV... -- CMD...: CMD with the given environment, with and without heca.
case_() {
	local name=$1 wb prc hrc
	shift
	local envs=()
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	env "${envs[@]}" timeout 120 "$@" >"$tmp/plain.out" 2>"$tmp/plain.err"
	prc=$?
	timeout 180 "$cli" run --local 48M --stats -- env "${envs[@]}" "$@" \
		>"$tmp/heca.out" 2>"$tmp/heca.err"
	hrc=$?
	wb=$(written_back "$tmp/heca.err")
	if [ "$hrc" = 124 ]; then
		bad "$name: still running after 180 s under heca (a deadlock?)"
	elif [ "$prc" != 0 ] || [ "$hrc" != 0 ]; then
		bad "$name: exit $hrc under heca, $prc without"
		tail -5 "$tmp/plain.err" "$tmp/heca.err"
	elif ! cmp -s "$tmp/plain.out" "$tmp/heca.out"; then
		bad "$name: output differs: '$(head -c 80 "$tmp/heca.out")' under heca, '$(head -c 80 "$tmp/plain.out")' without"
	elif [ -z "$wb" ] || [ "$wb" -lt 10000 ]; then
		bad "$name: heca wrote back ${wb:-no} pages: its big blocks were not sponsored"
		tail -5 "$tmp/heca.err"
	else
		ok "$name: $(cat "$tmp/heca.out"), $wb pages written back"
	fi
}

case_ "glibc malloc" -- "$prog" 256

declare -A linked
IFS=, read -r -a progs <<<"${HECA_ALLOC_PROGS:-}"
for p in "${progs[@]}"; do
	[ -n "$p" ] && linked[${p%%=*}]=${p#*=}
done
# Options that make each allocator map memory during its initialisation (tcmalloc grows its
# heap with sbrk by default, and maps it with this).
declare -A init_env=(
	[jemalloc]="MALLOC_CONF=narenas:4,background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0"
	[tcmalloc]="TCMALLOC_SKIP_SBRK=true"
	[mimalloc]="MIMALLOC_RESERVE_OS_MEMORY=64MiB"
)
for a in jemalloc tcmalloc mimalloc; do
	if [ -z "${linked[$a]:-}" ]; then
		bad "$a: no program linked with it was built (is its -dev package installed?)"
		continue
	fi
	lib=$(ls "$libdir"/lib$a.so.* 2>/dev/null | head -1)
	case_ "$a linked" -- "${linked[$a]}" 256
	case_ "$a linked, ${init_env[$a]}" "${init_env[$a]}" -- "${linked[$a]}" 256
	case_ "$a preloaded after heca, ${init_env[$a]}" "${init_env[$a]}" \
		-- sh -c 'LD_PRELOAD="$LD_PRELOAD:$0" exec "$@"' "$lib" "$prog" 256
done

echo "$failures failure(s)"
[ "$failures" = 0 ]
