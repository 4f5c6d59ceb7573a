#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the Debian 12 packages heca needs to build and test, only those that are missing, and
# fetch (never install) the Debian cloud kernel that tests/test_qemu.sh boots in QEMU.
set -eu
pkgs="build-essential cmake clang libclang-rt-14-dev gnuplot-nox iproute2 python3 procps
	libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev
	nodejs default-jdk-headless golang-go memcached qemu-system-x86 cpio"
# Where the guest kernel's package is kept; tests/test_qemu.sh takes vmlinuz out of it.
kernel_dir=/var/cache/heca
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
have_kernel=$(ls "$kernel_dir"/linux-image-*.deb 2>/dev/null | head -1)
[ -z "$missing" ] && [ -n "$have_kernel" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	[ -n "$missing" ] && echo "install-deps: missing packages:$missing; run as root or install them" >&2
	[ -z "$have_kernel" ] && echo "install-deps: no guest kernel in $kernel_dir (tests/test_qemu.sh fetches one itself or skips)" >&2
	[ -z "$missing" ] && exit 0
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing"
	# No package may start a service that stays running (memcached's would hold port
	# 11211): tests start their own instances on loopback ports. policy-rc.d refuses the
	# start for the duration of the install; one that was already there is kept.
	own_policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
	fi
	rc=0
	apt-get install -y -q --no-install-recommends $missing >/dev/null || rc=$?
	[ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
	[ "$rc" = 0 ] || exit "$rc"
fi
if [ -z "$have_kernel" ]; then
	# The package that linux-image-cloud-amd64 points at: the kernel of the day, built with
	# the serial console and initramfs support the guest needs. Downloaded only: the host's
	# own kernel and boot loader are not touched.
	kpkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-.*\)/\1/p' | head -1)
	echo "install-deps: fetching ${kpkg:-linux-image-cloud-amd64} into $kernel_dir"
	mkdir -p "$kernel_dir"
	(cd "$kernel_dir" && apt-get download -q "${kpkg:-linux-image-cloud-amd64}" >/dev/null 2>&1) ||
		echo "install-deps: cannot fetch the guest kernel; tests/test_qemu.sh will skip" >&2
fi
