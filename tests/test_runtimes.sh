#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `heca run` with language runtimes and a server that manage their own memory, each holding
# several times its local budget: a JVM (G1, whose heap grows by 1 MiB commits with
# mmap(MAP_FIXED) inside a PROT_NONE reservation), node (V8 Buffers), memcached (its slab
# allocator) and Go (a cgo program whose runtime gives memory back with raw madvise calls). The output must match a run without heca and heca must have written pages back,
# so a run that left the runtime's memory local cannot pass. A runtime that is not installed is
# a skipped case; if none can run the test skips.
# Env: HECAD, HECA_CLI. Exit: 0 pass, 1 fail, 77 skip (no runtime at all).
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cli=${HECA_CLI:-$here/../build/heca}

failures=0 passed=0 skipped=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
bad() { echo "not ok - $*"; failures=$((failures + 1)); }
skip_case() { echo "skip - $*"; skipped=$((skipped + 1)); }
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

. "$here/lib.sh"

# run_cmp NAME LOCAL CMD...: CMD with and without heca: same status and stdout, and pages
# written back (the budget is well below what CMD holds).
run_cmp() {
	local name=$1 local_=$2 wb prc hrc t0 t1 t2
	shift 2
	t0=$(date +%s.%N)
	timeout 60 "$@" >"$tmp/plain.out" 2>"$tmp/plain.err"
	prc=$?
	t1=$(date +%s.%N)
	timeout 90 "$cli" run --local "$local_" --stats -- "$@" >"$tmp/heca.out" 2>"$tmp/heca.err"
	hrc=$?
	t2=$(date +%s.%N)
	wb=$(written_back "$tmp/heca.err")
	local times
	times=$(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.1f s plain, %.1f s under heca", b - a, c - b }')
	if [ "$hrc" = 124 ]; then
		bad "$name: still running after 90 s under heca (a hang?)"
		tail -5 "$tmp/heca.err"
	elif [ "$prc" != 0 ] || [ "$hrc" != 0 ]; then
		bad "$name: exit $hrc under heca, $prc without"
		tail -5 "$tmp/plain.err" "$tmp/heca.err"
	elif [ ! -s "$tmp/plain.out" ] || ! cmp -s "$tmp/plain.out" "$tmp/heca.out"; then
		bad "$name: output '$(head -c 80 "$tmp/heca.out")' under heca, '$(head -c 80 "$tmp/plain.out")' without"
	elif [ -z "$wb" ] || [ "$wb" -le 0 ]; then
		bad "$name: heca wrote back ${wb:-no} pages: the runtime's memory was not sponsored"
		tail -5 "$tmp/heca.err"
	else
		ok "$name: same output ($(head -c 60 "$tmp/heca.out")), $wb pages written back, $times"
	fi
}

# 1. A JVM with G1: 48 arrays of 8 MiB (384 MiB) in a heap that starts at 16 MiB, 96 MiB local.
if command -v java >/dev/null && command -v javac >/dev/null; then
	mkdir -p "$tmp/java"
	cat >"$tmp/java/Fill.java" <<'EOF'
public class Fill {
	public static void main(String[] args) {
		long[][] a = new long[48][];
		for (int i = 0; i < a.length; i++) {
			a[i] = new long[1 << 20];
			for (int j = 0; j < a[i].length; j++)
				a[i][j] = (long) i * 1000003L + j * 7L + (j >>> 9);
		}
		long sum = 0;
		for (int pass = 0; pass < 2; pass++)
			for (long[] x : a)
				for (long v : x)
					sum += v ^ pass;
		System.out.println(sum);
	}
}
EOF
	if javac -d "$tmp/java" "$tmp/java/Fill.java" 2>"$tmp/javac.err"; then
		run_cmp "java G1, 48 x 8 MiB arrays, heap 16m..1g, budget 96 MiB" 96M \
			java -XX:+UseG1GC -Xms16m -Xmx1g -cp "$tmp/java" Fill
	else
		bad "java: javac failed: $(head -3 "$tmp/javac.err")"
	fi
else
	skip_case "java: no java/javac (default-jre-headless, default-jdk-headless)"
fi

# 2. node: 48 Buffers of 8 MiB (384 MiB), a value at every 4 KiB, 96 MiB local.
if command -v node >/dev/null; then
	run_cmp "node, 48 x 8 MiB Buffers, budget 96 MiB" 96M node -e '
const bufs = [];
for (let i = 0; i < 48; i++) {
	const b = Buffer.allocUnsafe(8 << 20);
	for (let o = 0; o < b.length; o += 4096)
		b.writeUInt32LE(((i * 2654435761) ^ o) >>> 0, o);
	bufs.push(b);
}
let sum = 0n;
for (let pass = 0; pass < 2; pass++)
	for (const b of bufs)
		for (let o = 0; o < b.length; o += 4096)
			sum += BigInt(b.readUInt32LE(o) + pass);
console.log(sum.toString());
'
else
	skip_case "node: not installed (nodejs)"
fi

# 3. memcached: ~160 MiB of 8 KiB values under a 32 MiB budget, every value read back and
# checked, under default options. Its slab pages are 1 MiB blocks from malloc, below 4 MiB:
# they are sponsored by the size rule (docs/transparent.md) once the process's unsponsored
# memory passes a quarter of the budget, with no --min-size (MEMCACHED_MIN_SIZE sets one).
memcached_bin=$(command -v memcached || ls /usr/bin/memcached 2>/dev/null)
if [ -n "$memcached_bin" ] && command -v python3 >/dev/null; then
	cat >"$tmp/mc_client.py" <<'EOF'
import hashlib, socket, sys, time
port = int(sys.argv[1])
for _ in range(200):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit("memcached did not listen")
f = s.makefile("rb")
N, SIZE, BATCH = 20000, 8192, 50
def value(i):
    return (hashlib.sha256(b"%d" % i).digest() * (SIZE // 32))[:SIZE]
for start in range(0, N, BATCH):
    req = b"".join(b"set k%d 0 0 %d\r\n%s\r\n" % (i, SIZE, value(i))
                   for i in range(start, min(N, start + BATCH)))
    s.sendall(req)
    for i in range(start, min(N, start + BATCH)):
        line = f.readline()
        if line != b"STORED\r\n":
            sys.exit("set k%d: %r" % (i, line))
bad = 0
for start in range(0, N, BATCH):
    keys = range(start, min(N, start + BATCH))
    s.sendall(b"get " + b" ".join(b"k%d" % i for i in keys) + b"\r\n")
    got = {}
    while True:
        line = f.readline()
        if line == b"END\r\n":
            break
        parts = line.split()
        if len(parts) != 4 or parts[0] != b"VALUE":
            sys.exit("get: %r" % line)
        data = f.read(int(parts[3]) + 2)[:-2]
        got[int(parts[1][1:])] = data
    for i in keys:
        if got.get(i) != value(i):
            bad += 1
if bad:
    sys.exit("%d of %d values missing or wrong" % (bad, N))
print("%d values of %d bytes stored and read back" % (N, SIZE))
EOF
	# mc_run NAME PREFIX...: memcached started by PREFIX, the client against it, then SIGTERM
	# (heca run passes it on, and prints its statistics when memcached has exited).
	mc_run() {
		local name=$1 port t0 t1 crc
		shift
		port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		t0=$(date +%s.%N)
		"$@" "$memcached_bin" -p "$port" -l 127.0.0.1 -U 0 -m 256 -u root \
			>"$tmp/mc.out" 2>"$tmp/mc.err" &
		mc=$!
		pids+=("$mc")
		timeout 60 python3 "$tmp/mc_client.py" "$port" >"$tmp/mc.client" 2>&1
		crc=$?
		t1=$(date +%s.%N)
		kill -TERM "$mc" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$mc" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$mc" 2>/dev/null; then
			kill -KILL "$mc"
			bad "$name: still running 10 s after SIGTERM"
		fi
		wait "$mc" 2>/dev/null
		mc_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
		if [ "$crc" != 0 ]; then
			bad "$name: client failed (exit $crc): $(tail -2 "$tmp/mc.client")"
			tail -5 "$tmp/mc.err"
			return 1
		fi
	}
	msize=${MEMCACHED_MIN_SIZE-}
	if mc_run "memcached without heca"; then
		plain_secs=$mc_secs
		name="memcached, budget 32 MiB, min-size ${msize:-default}"
		if mc_run "$name" "$cli" run --local 32M --stats ${msize:+--min-size "$msize"} --; then
			wb=$(written_back "$tmp/mc.err")
			if [ -z "$wb" ] || [ "$wb" -le 0 ]; then
				bad "$name: heca wrote back ${wb:-no} pages: its slabs were not sponsored"
				tail -5 "$tmp/mc.err"
			else
				ok "$name: $(cat "$tmp/mc.client"), $wb pages written back, $plain_secs s plain, $mc_secs s under heca"
			fi
		fi
	fi
else
	skip_case "memcached: not installed (memcached)"
fi

# 4. Go (cgo, so that the runtime maps its heap through libc's mmap): 192 MiB of slices under
# a 64 MiB budget, debug.FreeOSMemory() between allocations: the runtime gives memory back
# with raw madvise system calls that only the kernel's zap events show heca.
if command -v go >/dev/null && command -v gcc >/dev/null; then
	mkdir -p "$tmp/go"
	cp "$here/progs/gofree/main.go" "$tmp/go/main.go"
	if (cd "$tmp/go" && GOCACHE="$tmp/go/cache" GOPATH="$tmp/go/path" GO111MODULE=off \
		GOFLAGS= CGO_ENABLED=1 go build -o gofree main.go) >"$tmp/go/build.log" 2>&1; then
		run_cmp "Go (cgo) with debug.FreeOSMemory, 192 MiB, budget 64 MiB" 64M "$tmp/go/gofree"
	else
		bad "Go: the test program does not build: $(tail -2 "$tmp/go/build.log")"
	fi
else
	skip_case "Go: not installed (golang-go)"
fi

echo "$passed passed, $failures failure(s), $skipped skipped"
[ "$failures" != 0 ] && exit 1
[ "$passed" = 0 ] && exit 77
exit 0
