#!/usr/bin/env bash
# rootfs.sh builds, once, a Debian 12 root filesystem that boots under
# systemd-nspawn for the booted-hosts scenario, and prints its path.
#
# The tree is cached outside the repository, in $MESHWORK_E2E_CACHE
# (default /var/cache/meshwork-e2e), under a name keyed by a hash of the suite,
# the package list and this recipe, so a change to any of them builds a new
# tree and an unchanged recipe costs nothing. Hosts never write to the cached
# tree: each boots from its own overlay of it.
#
# The mirror is the Debian archive configured in this machine's APT sources.
set -euo pipefail

CACHE=${MESHWORK_E2E_CACHE:-/var/cache/meshwork-e2e}
SUITE=bookworm
# Bump RECIPE when the post-install steps below change.
RECIPE=1
PACKAGES=(
	systemd systemd-sysv systemd-resolved dbus libpam-systemd
	openssh-server python3 iproute2 bind9-dnsutils procps
)

log() { echo "rootfs: $*" >&2; }

# debian_mirror prints the first Debian archive URI from the APT sources
# (deb822 .sources files or one-line .list files), skipping the security
# archive and third-party repositories.
debian_mirror() {
	local f uri
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		uri=$(awk '
			/^URIs:/ { for (i = 2; i <= NF; i++) print $i }
			/^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }
		' "$f" | grep -E '/debian/?$' | grep -v security | head -n1 || true)
		if [ -n "$uri" ]; then
			echo "${uri%/}"
			return 0
		fi
	done
	echo "http://deb.debian.org/debian"
}

key=$(printf '%s\n' "$SUITE" "$RECIPE" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
dir="$CACHE/rootfs-$SUITE-$key"

if [ -f "$dir/.meshwork-complete" ]; then
	echo "$dir"
	exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
# Another run may have finished the tree while this one waited on the lock.
if [ -f "$dir/.meshwork-complete" ]; then
	echo "$dir"
	exit 0
fi

mirror=$(debian_mirror)
tmp="$dir.tmp"
rm -rf "$tmp"
log "debootstrap $SUITE from $mirror into $tmp"
includes=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --variant=minbase --include="$includes" "$SUITE" "$tmp" "$mirror" >&2

# Each host gets its own host keys and machine id at first boot.
rm -f "$tmp"/etc/ssh/ssh_host_*
: >"$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id"
# Networking comes from systemd-networkd with a per-host .network file;
# names resolve through systemd-resolved.
chroot "$tmp" systemctl enable systemd-networkd.service systemd-resolved.service ssh.service >&2
ln -sf ../run/systemd/resolve/stub-resolv.conf "$tmp/etc/resolv.conf"
# The containers have no console login; nothing waits on getty.
chroot "$tmp" systemctl mask console-getty.service getty@tty1.service systemd-networkd-wait-online.service >&2 || true
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
touch "$tmp/.meshwork-complete"
mv "$tmp" "$dir"
log "cached $dir"
echo "$dir"
