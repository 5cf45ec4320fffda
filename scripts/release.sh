#!/usr/bin/env bash
# release.sh builds the release artifacts of one version into OUT:
#
#   meshwork_VERSION_linux_ARCH.tar.gz  meshwork, LICENSE, README.md,
#                                       CHANGELOG.md and systemd/ (the unit,
#                                       sysusers, resolved and sysctl drop-ins)
#   meshwork_VERSION_ARCH.deb           the Debian package (packaging/nfpm.yaml)
#   SHA256SUMS                          sha256sum of each of the above
#   SHA256SUMS.sig                      with SIGNING_KEY: an SSH signature of
#                                       SHA256SUMS, namespace "file"
#
# Environment:
#   VERSION            required: a semantic version, x.y.z[-pre][+build]
#                      (a leading v is dropped)
#   OUT                where the artifacts go. Default: dist. It may hold
#                      only files of the names above, which are replaced.
#   ARCHES             Linux architectures. Default: "amd64 arm64"
#   SIGNING_KEY        an SSH private key (ed25519), or its .pub while an
#                      ssh-agent holds the key. Default: no signature
#   TAGS               build tags. Default: the Makefile's TAGS
#   SOURCE_DATE_EPOCH  the time of every file. Default: HEAD's commit time
#
# The same commit, VERSION and Go toolchain give the same bytes: the binary
# is built with -trimpath and an empty build ID, every archive has sorted
# names, owner 0 and the commit's time, and gzip stores no name or time.
# docs/releases.md says how to cut, verify and install a release.
set -euo pipefail
export LC_ALL=C TZ=UTC
umask 022

die() {
	echo "release.sh: $*" >&2
	exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

[ -n "${VERSION:-}" ] || die "VERSION is required: VERSION=x.y.z scripts/release.sh"
version=$(scripts/version.sh) || exit 2 # version.sh names what is wrong with VERSION
commit=$(scripts/version.sh commit)
[ "$commit" != unknown ] || die "not in a git tree: a release names its commit"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	echo "release.sh: warning: the tree has uncommitted changes; the artifacts say commit $commit but do not match it" >&2
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH is not a Unix time"

OUT=${OUT:-dist}
ARCHES=${ARCHES:-amd64 arm64}
read -r -a arches <<<"$ARCHES"
[ ${#arches[@]} -gt 0 ] || die "ARCHES is empty: want amd64, arm64 or both"
for arch in "${arches[@]}"; do
	case $arch in
	amd64 | arm64) ;;
	*) die "ARCHES: unknown architecture $arch: want amd64 or arm64" ;;
	esac
done
# The Makefile owns the build tags; read them there when make did not pass them.
TAGS=${TAGS:-$(sed -n 's/^TAGS[[:space:]]*?=[[:space:]]*//p' Makefile)}
[ -n "$TAGS" ] || die "no TAGS given and none found in the Makefile"
if [ -n "${SIGNING_KEY:-}" ] && [ ! -r "$SIGNING_KEY" ]; then
	die "SIGNING_KEY=$SIGNING_KEY: no such readable file"
fi

# What OUT will hold. Anything else in it is another build's, and a
# SHA256SUMS beside it would not cover it: refuse rather than mix them.
outputs=(SHA256SUMS SHA256SUMS.sig)
for arch in "${arches[@]}"; do
	outputs+=("meshwork_${version}_linux_${arch}.tar.gz" "meshwork_${version}_${arch}.deb")
done
if [ -d "$OUT" ]; then
	for f in "$OUT"/* "$OUT"/.[!.]*; do
		[ -e "$f" ] || continue
		name=$(basename "$f")
		[[ " ${outputs[*]} " == *" $name "* ]] || die "OUT=$OUT holds $name, which this release would not make: empty it or choose another OUT"
	done
fi

scripts/deps.sh release
GOBIN=${GOBIN:-$(go env GOPATH)/bin}
nfpm=$GOBIN/nfpm

work=$(mktemp -d "${TMPDIR:-/tmp}/meshwork-release.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/out"

# The unit of the package runs /usr/bin/meshwork; systemd/meshwork.service,
# the one source, names /usr/local/bin for a binary installed by hand.
unit=$work/meshwork.service
sed 's#/usr/local/bin/meshwork#/usr/bin/meshwork#g' systemd/meshwork.service >"$unit"
grep -q '^ExecStart=/usr/bin/meshwork agent ' "$unit" || die "systemd/meshwork.service: no ExecStart=/usr/local/bin/meshwork agent ... to rewrite"
grep -q '^ExecReload=/usr/bin/meshwork validate ' "$unit" || die "systemd/meshwork.service: no ExecReload=/usr/local/bin/meshwork validate ... to rewrite"
! grep -q '/usr/local/' "$unit" || die "systemd/meshwork.service: a /usr/local path is left after the rewrite: $(grep /usr/local/ "$unit")"

systemd_files=(meshwork.service meshwork.sysusers resolved-meshwork.conf sysctl-meshwork.conf)

for arch in "${arches[@]}"; do
	echo "release.sh: meshwork $version ($commit) linux/$arch" >&2
	bin=$work/build/$arch/meshwork
	# GOAMD64 and GOARM64 pinned to their defaults, so that an environment
	# that sets them changes nothing.
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOAMD64=v1 GOARM64=v8.0 GOFLAGS= \
		go build -trimpath -tags "$TAGS" \
		-ldflags "-s -w -buildid= -X main.version=$version -X main.commit=$commit" \
		-o "$bin" ./cmd/meshwork
	if [ "$(go env GOHOSTARCH)" = "$arch" ]; then
		got=$("$bin" version --format json)
		[[ $got == *"\"version\": \"$version\""* && $got == *"\"commit\": \"$commit\""* ]] ||
			die "the linux/$arch binary reports $got, want version $version and commit $commit"
	fi

	# The tarball: files at its top level, so that `tar -xzf ... meshwork`
	# takes the binary alone.
	stage=$work/tar/$arch
	install -D -m 0755 "$bin" "$stage/meshwork"
	install -m 0644 LICENSE README.md CHANGELOG.md "$stage/"
	for f in "${systemd_files[@]}"; do
		install -D -m 0644 "systemd/$f" "$stage/systemd/$f"
	done
	# The names in C order on the command line; --sort=name orders what is
	# under systemd/.
	tar --create --format=gnu --sort=name --mtime="@$SOURCE_DATE_EPOCH" \
		--owner=0 --group=0 --numeric-owner --mode=go-w \
		-C "$stage" -f - CHANGELOG.md LICENSE README.md meshwork systemd |
		gzip -9 -n >"$work/out/meshwork_${version}_linux_${arch}.tar.gz"

	MESHWORK_VERSION=$version MESHWORK_ARCH=$arch MESHWORK_BIN=$bin MESHWORK_UNIT=$unit \
		"$nfpm" package --config packaging/nfpm.yaml --packager deb \
		--target "$work/out/meshwork_${version}_${arch}.deb" >&2
done

(cd "$work/out" && sha256sum -- *) >"$work/SHA256SUMS"
mv "$work/SHA256SUMS" "$work/out/SHA256SUMS"

if [ -n "${SIGNING_KEY:-}" ]; then
	ssh-keygen -q -Y sign -f "$SIGNING_KEY" -n file "$work/out/SHA256SUMS"
	# Check the signature as a user would, with the public key alone.
	case $SIGNING_KEY in
	*.pub) pub=$(cat "$SIGNING_KEY") ;;
	*) pub=$(ssh-keygen -y -f "$SIGNING_KEY") ;;
	esac
	printf 'release@meshwork namespaces="file" %s\n' "$pub" >"$work/allowed_signers"
	ssh-keygen -Y verify -f "$work/allowed_signers" -I release@meshwork -n file \
		-s "$work/out/SHA256SUMS.sig" <"$work/out/SHA256SUMS" >/dev/null ||
		die "the signature made with $SIGNING_KEY does not verify"
fi

mkdir -p "$OUT"
rm -f "$OUT/SHA256SUMS.sig" # a signature of an earlier SHA256SUMS would not verify
cp "$work/out"/* "$OUT/"
echo "release.sh: meshwork $version ($commit) in $OUT:" >&2
cat "$OUT/SHA256SUMS" >&2
