#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `heca run` with real programs that know nothing of heca, each under a local budget well below
# what it uses, its output compared with a run without heca, and heca's own counters checked
# so that a run that bypassed heca cannot pass: python3, GNU sort, a program that forks (and
# execs) after filling memory, a program that grows a buffer with mremap, one that commits
# PROT_NONE reservations as language runtimes do; then the errors, a
# running program's status, and the sponsors freeing everything when a program exits or is
# killed. Env: HECAD, HECA_CLI, PROG_FORK, PROG_MREMAP, PROG_RESV. Exit: 0 pass, 1 fail, 77 skip.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hecad=${HECAD:-$here/../build/hecad}
cli=${HECA_CLI:-$here/../build/heca}
prog_fork=${PROG_FORK:-$here/../build/prog_fork}
prog_mremap=${PROG_MREMAP:-$here/../build/prog_mremap}
prog_resv=${PROG_RESV:-$here/../build/prog_resv}
prog_raw=${PROG_RAW:-$here/../build/prog_raw}

failures=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; failures=$((failures + 1)); }
skip() { echo "SKIP: $*"; exit 77; }

command -v python3 >/dev/null || skip "no python3"
command -v sort >/dev/null || skip "no sort"
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

. "$here/lib.sh"

# run_cmp NAME LOCAL CMD...: run CMD with and without heca; same stdout and status, and heca
# must have sent pages away (its budget is below what CMD uses).
run_cmp() {
	local name=$1 local_=$2 wb
	shift 2
	"$@" >"$tmp/plain.out" 2>"$tmp/plain.err"
	local prc=$?
	"$cli" run --local "$local_" --stats -- "$@" >"$tmp/heca.out" 2>"$tmp/heca.err"
	local hrc=$?
	wb=$(written_back "$tmp/heca.err")
	if [ "$prc" != "$hrc" ]; then
		bad "$name: exit $hrc under heca, $prc without"
		tail -20 "$tmp/heca.err"
	elif ! cmp -s "$tmp/plain.out" "$tmp/heca.out"; then
		bad "$name: output differs from the run without heca"
		diff "$tmp/plain.out" "$tmp/heca.out" | head -5
	elif [ -z "$wb" ] || [ "$wb" -lt 1000 ]; then
		bad "$name: heca wrote back ${wb:-no} pages: the program did not run on sponsored memory"
		tail -20 "$tmp/heca.err"
	else
		ok "$name: same output ($(head -c 60 "$tmp/heca.out" | tr '\n' ' ')), $wb pages written back"
	fi
}

# fill96 [PRELUDE [PAUSE]]: a python3 program that fills a 96 MiB bytearray, runs PRELUDE
# first, sleeps PAUSE seconds, then prints a sum over every page.
fill96() {
	printf '%s\nimport time\nb = bytearray(96 << 20)\n' "${1:-}"
	printf 'for i in range(0, len(b), 512):\n    b[i] = (i >> 9) & 255\n'
	printf 'time.sleep(%s)\n' "${2:-0}"
	printf 'print(sum(sum(b[k::4096]) for k in (0, 512, 1024)))\n'
}

# 1. python3: a bytearray and a list several times the budget, summed several times.
run_cmp "python3 bytearray 96 MiB, budget 16 MiB" 16M python3 -c "$(fill96)"
# A program that outlives the process heca run started (a wrapper that ends first, here a
# shell that leaves its job behind): the sponsors heca run started must outlive it too.
prog=$(fill96 "" 1)
want=$(python3 -c "$prog")
out=$("$cli" run --local 16M --stats -- sh -c 'python3 -c "$0" & exit 0' "$prog" 2>"$tmp/err")
rc=$?
wb=$(written_back "$tmp/err")
if [ $rc = 0 ] && [ "$out" = "$want" ] && [ -n "$wb" ] && [ "$wb" -ge 1000 ]; then
	ok "a process left behind by the one heca run started: same output ($want), $wb pages written back"
else
	bad "a process left behind: exit $rc, output '$out' (want $want), ${wb:-no} pages written back: $(tail -5 "$tmp/err")"
fi
run_cmp "python3 list of 8M ints (64 MiB of pointers), budget 16 MiB" 16M python3 -c '
l = [i & 1023 for i in range(8_000_000)]
s = 0
for k in range(3):
    s += sum(l[k::3])
print(s, len(l))
'

# 2. GNU sort with an in-memory buffer on a file larger than the budget.
python3 -c '
import random
r = random.Random(11)
with open("'"$tmp"'/in.txt", "w") as f:
    for i in range(300_000):
        f.write("%016x %d\n" % (r.getrandbits(64), i))
'
run_cmp "sort -S 64M of a $(($(stat -c %s "$tmp/in.txt") >> 20)) MiB file, budget 4 MiB" 4M \
	sort -S 64M "$tmp/in.txt"

# 3. fork after filling memory: parent and child each see only their own writes; exec too.
run_cmp "fork: parent and child write different values (2 x 96 MiB, budget 16 MiB)" 16M \
	"$prog_fork" 96
grep -q "child: OK" "$tmp/heca.out" || bad "fork: the child did not say OK"
run_cmp "fork, then exec in the child under the same heca run" 16M "$prog_fork" --exec 64
grep -q "exec: OK" "$tmp/heca.out" || bad "fork+exec: the exec'd program did not say OK"

# 4. mremap: grow (moving), shrink, regrow, discard, punch a hole, mprotect it away and back.
run_cmp "mremap: grow a buffer to 256 MiB, shrink, discard, hole, PROT_NONE and back (budget 16 MiB)" 16M \
	"$prog_mremap" 256

# 5. Reservations made PROT_NONE and committed later, as runtimes do (V8's 256 KiB pages
#    opened with mprotect, G1's 1 MiB regions with mmap(MAP_FIXED)), decommitted and
#    recommitted; nothing of it is big enough for --min-size alone.
run_cmp "PROT_NONE reservations committed by mprotect and MAP_FIXED, decommitted, recommitted (budget 16 MiB)" 16M \
	"$prog_resv" 128

# 5b. Raw system calls behind the preload's back: madvise(DONTNEED), munmap with new memory
#     mapped there, mremap moving and growing (followed by the kernel's userfaultfd events).
run_cmp "raw syscall madvise, munmap and mremap on sponsored memory (budget 16 MiB)" 16M \
	"$prog_raw" 64
grep -q "raw: OK" "$tmp/heca.out" || bad "raw system calls: the program did not say OK"

# 6. Errors: clear message, non-zero exit.
"$cli" run -- /nonexistent/program >"$tmp/out" 2>&1
rc=$?
if [ $rc = 127 ] && grep -q "cannot execute '/nonexistent/program'" "$tmp/out"; then
	ok "a program that does not exist: exit 127, $(head -1 "$tmp/out")"
else
	bad "a program that does not exist: exit $rc: $(cat "$tmp/out")"
fi
"$cli" run --local lots -- true >"$tmp/out" 2>&1
rc=$?
if [ $rc = 2 ] && grep -q -- "--local lots" "$tmp/out"; then
	ok "a bad option: exit 2, $(head -1 "$tmp/out")"
else
	bad "a bad option: exit $rc: $(cat "$tmp/out")"
fi
"$cli" run --grace never -- true >"$tmp/out" 2>&1
rc=$?
if [ $rc = 2 ] && grep -q -- "--grace never" "$tmp/out"; then
	ok "a bad --grace: exit 2, $(head -1 "$tmp/out")"
else
	bad "a bad --grace: exit $rc: $(cat "$tmp/out")"
fi
# A block the sponsors cannot hold (two 1 MiB sponsors, two copies, 4 MiB of local limit)
# stays ordinary memory, and heca says why; the program runs as without heca.
out=$("$cli" run --spawn 2 --capacity 1M --local 2M --min-size 1M -- python3 -c '
b = bytearray(32 << 20)
for i in range(0, len(b), 4096): b[i] = i // 4096 % 251
print(sum(b[i] for i in range(0, len(b), 4096)))' 2>"$tmp/err")
rc=$?
want=$(python3 -c 'print(sum(i % 251 for i in range(8192)))')
if [ $rc = 0 ] && [ "$out" = "$want" ] && grep -q "stays local memory: cannot sponsor" "$tmp/err"; then
	ok "a block the sponsors cannot hold stays local: $(grep -m1 'cannot sponsor' "$tmp/err" | cut -c1-110)"
else
	bad "a block the sponsors cannot hold: exit $rc, output '$out' (want $want): $(cat "$tmp/err")"
fi
"$cli" run --bogus -- true >"$tmp/out" 2>&1
rc=$?
[ $rc = 2 ] && ok "an unknown option: exit 2" || bad "an unknown option: exit $rc: $(cat "$tmp/out")"
"$cli" run --sponsors 127.0.0.1:1 -- true >"$tmp/out" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q "refused" "$tmp/out"; then
	ok "no reachable sponsor: exit 1, $(head -1 "$tmp/out")"
else
	bad "no reachable sponsor: exit $rc: $(cat "$tmp/out")"
fi
"$cli" run >"$tmp/out" 2>&1
rc=$?
[ $rc = 2 ] && ok "no program: exit 2" || bad "no program: exit $rc"

# 7. Sponsors of our own, with a 1 s lease: a running program's status, then everything freed
#    when it exits, and when it is killed without a word.
"$hecad" --listen 127.0.0.1:0 --capacity 1G --lease 1 >"$tmp/hecad.out" 2>"$tmp/hecad.err" &
pids+=($!)
for _ in $(seq 50); do grep -q "listening on" "$tmp/hecad.out" && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$tmp/hecad.out")
[ -n "$addr" ] || { bad "hecad did not start: $(cat "$tmp/hecad.err")"; exit 1; }

# What the sponsor stores for everyone ("41.0 MiB"), from `heca status --sponsors`.
used() {
	"$cli" status --sponsors "$addr" | awk 'NR == 2 { print $(NF - 1), $NF }'
}
wait_used_zero() {
	for _ in $(seq 60); do
		[ "$(used)" = "0 B" ] && return 0
		sleep 0.1
	done
	return 1
}

"$cli" run --sponsors "$addr" --local 8M -- python3 -c '
import sys, time
marker = "heca-status-probe"
b = bytearray(48 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("ready", flush=True)
time.sleep(30)
' >"$tmp/status.out" 2>&1 &
runpid=$!
pids+=($runpid)
for _ in $(seq 100); do grep -q ready "$tmp/status.out" && break; sleep 0.1; done
# The program's process is the one with a control socket (python3 may be a wrapper script).
prog=
for p in $(pgrep -f heca-status-probe); do
	[ -S "/run/heca/$p.sock" ] && prog=$p
done
if [ -n "$prog" ] && "$cli" status --pid "$prog" >"$tmp/st" 2>&1 &&
	grep -q "^segments=[1-9]" "$tmp/st" && grep -q "^pages_written_back=[1-9]" "$tmp/st"; then
	ok "heca status --pid of a running program: $(grep -E '^(segments|resident_pages|pages_written_back)=' "$tmp/st" | tr '\n' ' ')"
else
	bad "heca status --pid $prog: $(cat "$tmp/st" 2>/dev/null)"
fi
u=$(used)
kill -9 "$prog" 2>/dev/null
wait "$runpid" 2>/dev/null
if [ "$u" != "0 B" ] && wait_used_zero; then
	ok "killed with SIGKILL: the sponsor held $u and freed it when the lease ended"
else
	bad "killed with SIGKILL: the sponsor held $u, now $(used)"
fi

"$cli" run --sponsors "$addr" --local 8M -- python3 -c '
b = bytearray(48 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print(sum(b))
' >"$tmp/exit.out" 2>&1
# Freed at exit by the program itself: well before the lease would.
u=$(used)
if [ "$u" = "0 B" ] && [ "$(cat "$tmp/exit.out")" = 12288 ]; then
	ok "normal exit: the sponsor holds nothing right after (program printed $(cat "$tmp/exit.out"))"
else
	bad "normal exit: the sponsor holds $u; the program printed $(cat "$tmp/exit.out")"
fi

# heca run under `timeout`, with a shell between it and the program: the SIGTERM that timeout
# sends to the whole process group reaches the shell and heca run, never the sponsors heca run
# started; the program, which ignores it, finishes with every page intact.
prog=$(fill96 "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)" 6)
want=$(python3 -c "$prog")
# The interpreter itself, not a launcher script (pyenv's shims are bash, slow to start under
# load): the signal must find the handler installed.
py=$(python3 -c 'import sys; print(sys.executable)')
out=$(timeout -s TERM 3 "$cli" run --local 16M --stats -- sh -c '"$1" -c "$0"' "$prog" "$py" 2>"$tmp/timeout.err")
rc=$?
if [ "$rc" = 124 ] && [ "$out" = "$want" ] && ! grep -qE "lost pages [1-9]|SIGBUS|Bus error" "$tmp/timeout.err"; then
	ok "under timeout with a shell between: the program outlived the signal, output $out, nothing lost"
else
	bad "under timeout: exit $rc, printed '$out' (want $want): $(grep -m3 -E "lost|error|signal" "$tmp/timeout.err")"
fi

# Programs the loader will not load heca into: a warning naming the reason, never a silent run.
printf 'int main(void) { return 3; }\n' >"$tmp/static.c"
if cc -static -o "$tmp/static" "$tmp/static.c" 2>/dev/null; then
	"$cli" run --local 8M --stats -- "$tmp/static" >/dev/null 2>"$tmp/static.err"
	rc=$?
	if [ "$rc" = 3 ] && grep -q "warning: .*static runs without heca: it is statically linked" "$tmp/static.err" &&
		grep -q "no statistics" "$tmp/static.err"; then
		ok "a statically linked program: warned, ran (exit 3), --stats says nothing was sponsored"
	else
		bad "a statically linked program: exit $rc, said: $(cat "$tmp/static.err")"
	fi
else
	bad "cannot build a static program (is libc6-dev installed?)"
fi
if id nobody >/dev/null 2>&1 && cc -o "$tmp/suid" "$tmp/static.c" 2>/dev/null &&
	chown nobody "$tmp/suid" 2>/dev/null && chmod u+s "$tmp/suid"; then
	"$cli" run --local 8M -- "$tmp/suid" 2>"$tmp/suid.err"
	rc=$?
	if [ "$rc" = 3 ] && grep -q "runs without heca: it is set-user-ID" "$tmp/suid.err"; then
		ok "a set-user-ID program: warned, ran"
	else
		bad "a set-user-ID program: exit $rc, said: $(cat "$tmp/suid.err")"
	fi
fi

# mlock of sponsored memory: the evictor cannot drop a locked page (without the refusal, a
# 64 MiB locked bytearray under a 16 MiB budget hung the program), so it is refused with a
# line naming the reason; the memory stays correct, and locking ordinary memory still works.
out=$(timeout 60 "$cli" run --local 16M -- python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
b = bytearray(64 << 20)
for i in range(0, len(b), 4096): b[i] = (i >> 12) & 255
addr = ctypes.addressof((ctypes.c_char * len(b)).from_buffer(b))
r = libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(len(b)))
e = ctypes.get_errno()
for i in range(0, len(b), 4096): b[i] = (b[i] + 1) & 255
ok = all(b[i] == ((i >> 12) + 1) & 255 for i in range(0, len(b), 4096))
small = bytearray(4096)
sa = ctypes.addressof((ctypes.c_char * 4096).from_buffer(small))
print(r, e == 1, ok, libc.mlock(ctypes.c_void_p(sa), ctypes.c_size_t(4096)))' 2>"$tmp/mlock.err")
rc=$?
if [ "$rc" = 0 ] && [ "$out" = "-1 True True 0" ] && grep -q "mlock(.*) refused: the range is sponsored" "$tmp/mlock.err"; then
	ok "mlock of sponsored memory: refused with EPERM and a reason, content intact, ordinary mlock works"
else
	bad "mlock of sponsored memory: exit $rc, printed '$out' (want '-1 True True 0'): $(tail -3 "$tmp/mlock.err")"
fi

echo "$failures failure(s)"
[ "$failures" = 0 ]
