#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the Debian 12 packages heca needs to build and test, only those that are missing.
set -eu
pkgs="build-essential cmake clang libclang-rt-14-dev libssl-dev gnuplot-nox iproute2 python3 procps
	libjemalloc-dev libgoogle-perftools-dev libmimalloc-dev
	nodejs default-jdk-headless memcached"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing; run as root or install them" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# No package may start a service that stays running (memcached's would hold port 11211):
# tests start their own instances on loopback ports. policy-rc.d refuses the start for the
# duration of the install; one that was already there is kept.
own_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	own_policy=1
fi
rc=0
apt-get install -y -q --no-install-recommends $missing >/dev/null || rc=$?
[ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
exit $rc
