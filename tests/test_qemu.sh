#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A QEMU virtual machine under `heca run`: a 1 GiB TCG guest (a Debian cloud kernel and an
# initramfs made here of one static program, tests/progs/guest_init.c) fills 75% of its RAM
# with a pattern of each word's place and a seed, reads it all back and powers off, under a
# budget of a quarter of the guest's RAM. The guest must say it verified its memory, QEMU must
# exit 0 and heca must have written back most of what the guest wrote. Then what cannot work
# under heca must be refused up front, with heca's line saying why: postcopy migration into a
# guest (QEMU's own userfaultfd) and -overcommit mem-lock=on (mlockall).
# Env: HECA_CLI, HECA_QEMU_KERNEL (a vmlinuz to boot instead of the fetched one),
# HECA_QEMU_MEM (guest RAM in MiB, default 1024). Exit: 0 pass, 1 fail, 77 no QEMU or kernel.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cli=${HECA_CLI:-$here/../build/heca}
mem=${HECA_QEMU_MEM:-1024}
budget=$((mem / 4))
qemu=$(command -v qemu-system-x86_64) || {
	echo "SKIP: qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)"
	exit 77
}
command -v cpio >/dev/null || { echo "SKIP: cpio is not installed"; exit 77; }

failures=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; failures=$((failures + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The kernel: given, or taken out of the package scripts/install-deps.sh fetched, or fetched
# here (only downloaded and unpacked in $tmp, never installed).
kernel=${HECA_QEMU_KERNEL:-}
if [ -z "$kernel" ]; then
	deb=$(ls -t /var/cache/heca/linux-image-*.deb 2>/dev/null | head -1)
	if [ -z "$deb" ]; then
		(cd "$tmp" && apt-get download -q linux-image-cloud-amd64 >/dev/null 2>&1 &&
			pkg=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | sed 's/[ ,(].*//') &&
			apt-get download -q "$pkg" >/dev/null 2>&1)
		deb=$(ls "$tmp"/linux-image-[0-9]*.deb 2>/dev/null | head -1)
	fi
	if [ -n "$deb" ]; then
		mkdir "$tmp/k"
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/k" --wildcards './boot/vmlinuz-*'
		kernel=$(ls "$tmp"/k/boot/vmlinuz-* 2>/dev/null | head -1)
	fi
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
	echo "SKIP: no guest kernel (scripts/install-deps.sh fetches one into /var/cache/heca)"
	exit 77
fi

# The initramfs: the guest program as /init, alone.
mkdir "$tmp/root"
if ! gcc -static -O2 -Wall -Wextra -Werror -o "$tmp/root/init" "$here/progs/guest_init.c"; then
	echo "not ok - cannot build the guest program statically (libc6-dev has libc.a)"
	exit 1
fi
(cd "$tmp/root" && echo init | cpio -o -H newc --quiet) | gzip -1 >"$tmp/initrd.gz"

# QEMU's arguments for this guest; append WORDS...: its kernel command line.
guest=(-machine q35,accel=tcg -cpu max -m "${mem}M" -nodefaults -display none -serial stdio
	-no-reboot -kernel "$kernel" -initrd "$tmp/initrd.gz")
append() { echo "console=ttyS0 panic=-1 quiet $*"; }
. "$here/lib.sh"

# The verifier is real: read back with the wrong seed, it must name a bad word (plain, 5%).
timeout 120 "$qemu" "${guest[@]}" -append "$(append fill_pct=5 check_seed=2)" >"$tmp/neg.out" 2>&1
if grep -q '^guest: FAILED at offset 0x0 ' "$tmp/neg.out"; then
	ok "the guest's check fails on a wrong pattern: $(grep -m1 '^guest: FAILED' "$tmp/neg.out" | tr -d '\r')"
else
	bad "the guest's check did not fail on a wrong pattern"
	tail -n 5 "$tmp/neg.out"
fi

# The guest under heca, its RAM four times the budget.
start=$SECONDS
timeout 200 "$cli" run --local "${budget}M" --stats -- "$qemu" "${guest[@]}" -append "$(append)" \
	>"$tmp/heca.out" 2>"$tmp/heca.err"
rc=$?
secs=$((SECONDS - start))
line=$(grep -m1 '^guest: verified' "$tmp/heca.out" | tr -d '\r')
mib=$(echo "$line" | sed -n 's/^guest: verified \([0-9]*\) MiB.*/\1/p')
wb=$(written_back "$tmp/heca.err")
# What the guest wrote beyond the budget must have gone to the sponsors at least once.
want=$(((${mib:-0} - budget) * 256 * 8 / 10))
if [ "$rc" = 124 ]; then
	bad "guest under heca still running after 200 s"
	tail -n 5 "$tmp/heca.out" "$tmp/heca.err"
elif [ "$rc" != 0 ] || [ -z "$line" ]; then
	bad "guest under heca: exit $rc, ${line:-no verified line}"
	grep -a 'guest:' "$tmp/heca.out"
	tail -n 5 "$tmp/heca.out" "$tmp/heca.err"
elif [ "${mib:-0}" -lt $((mem / 2)) ]; then
	bad "the guest filled only ${mib} MiB of its ${mem} MiB"
elif [ -z "$wb" ] || [ "$wb" -lt "$want" ]; then
	bad "heca wrote back ${wb:-no} pages, fewer than $want: guest RAM was not sponsored"
	tail -n 8 "$tmp/heca.err"
else
	ok "${mem} MiB guest under a ${budget} MiB budget: $line; $wb pages written back; ${secs} s"
fi

# qmp ARGS...: QEMU paused, with QMP on stdin: capabilities, then $cmd, then quit.
qmp() {
	printf '%s\n' '{"execute":"qmp_capabilities"}' "$cmd" '{"execute":"quit"}' |
		timeout 60 "$@" -machine q35,accel=tcg -m "${mem}M" -nodefaults -display none -S \
			-qmp stdio
}

# Postcopy migration into this QEMU would register the guest's RAM with QEMU's own
# userfaultfd, which fails (EBUSY) only once the source has handed the guest over; under heca
# the capability must be refused before any migration starts.
cmd='{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"postcopy-ram","state":true}]}}'
qmp "$qemu" -incoming defer >"$tmp/pc-plain.out" 2>&1
qmp "$cli" run --local "${budget}M" -- "$qemu" -incoming defer >"$tmp/pc.out" 2>&1
if ! grep -q '^{"return": {}}' "$tmp/pc-plain.out" || grep -q '"error"' "$tmp/pc-plain.out"; then
	bad "without heca, QEMU here does not take postcopy-ram: $(grep -m1 error "$tmp/pc-plain.out")"
elif grep -q '"Postcopy is not supported"' "$tmp/pc.out" &&
	grep -q 'heca.*userfaultfd refused' "$tmp/pc.out"; then
	ok "postcopy migration into the guest refused up front: $(grep -m1 -o 'userfaultfd refused: [^(]*' "$tmp/pc.out")"
else
	bad "postcopy-ram was not refused under heca"
	cat "$tmp/pc.out"
fi

# Locked memory cannot be evicted: QEMU must stop at its mlockall, saying why.
cmd='{"execute":"query-status"}'
qmp "$cli" run --local "${budget}M" -- "$qemu" -overcommit mem-lock=on >"$tmp/ml.out" 2>&1
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q 'heca.*mlockall(0x3) refused' "$tmp/ml.out" &&
	grep -q 'locking memory failed' "$tmp/ml.out"; then
	ok "-overcommit mem-lock=on refused: QEMU exits $rc"
else
	bad "-overcommit mem-lock=on under heca: exit $rc, not refused"
	cat "$tmp/ml.out"
fi

echo "test_qemu: $failures failed"
[ "$failures" = 0 ]
