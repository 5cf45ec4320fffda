#!/usr/bin/env bash
# Installs what the tests, benchmarks and demo need, by group. Idempotent: a
# group whose tools are present costs a few `command -v` calls.
#
#   scripts/deps.sh test     dig (DNS client tests), iproute2, and the real
#                            clients of transport's L7 tests: curl, h2load
#                            (nghttp2-client), grpc-go's interop client and
#                            server (grpc-interop-client, grpc-interop-server);
#                            promtool (prometheus) for monitoring's rule and
#                            dashboard checks
#   scripts/deps.sh e2e      netns and booted-host tests: tshark, curl, nginx,
#                            systemd-container, debootstrap, ansible, ssh,
#                            Jaeger (jaeger, the all-in-one with OTLP),
#                            chromium (the UI's browser tests, driven by chromedp)
#   scripts/deps.sh bench    dnsperf, CoreDNS, iperf3, stunnel4, haproxy, wrk,
#                            fortio, ghz, redis, postgresql
#   scripts/deps.sh step     step-ca and the step CLI, for the external-CA test
#   scripts/deps.sh lint     ansible-lint, systemd-analyze
#   scripts/deps.sh release  nfpm (the .deb packager), dpkg-deb, ssh-keygen
set -euo pipefail

# Versions are pinned: the module proxy here serves a limited mirror.
COREDNS_VERSION=v1.15.0
STEP_VERSION=v0.30.2
FORTIO_VERSION=v1.68.2
GHZ_VERSION=v0.120.0
NFPM_VERSION=v2.48.0
JAEGER_VERSION=v1.75.0
# The gRPC interop client and server: a release pinned on its own, which the
# realclients tests have passed with (go.mod may require a newer grpc).
GRPC_VERSION=v1.79.3

GOBIN=${GOBIN:-$(go env GOPATH)/bin}
export PATH="$GOBIN:$PATH"

# retry CMD... runs CMD up to three times, 10 s apart: a mirror caught
# mid-sync or a dropped proxy connection fails one try, not the run.
retry() {
	local try
	for try in 1 2 3; do
		"$@" && return 0
		[ $try -lt 3 ] || break
		echo "deps.sh: '$*' failed (try $try of 3), retrying in 10 s" >&2
		sleep 10
	done
	echo "deps.sh: '$*' failed three times" >&2
	return 1
}

apt_updated=0
# apt_install PKG... installs the Debian packages that are missing.
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	if [ $apt_updated -eq 0 ]; then
		retry $sudo apt-get update -qq
		apt_updated=1
	fi
	retry env DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# go_install BIN MODULE@VERSION [env...] installs a Go tool unless BIN exists.
go_install() {
	local bin=$1 mod=$2
	shift 2
	[ -x "$GOBIN/$bin" ] && return 0
	retry env "$@" go install "$mod"
}

# go_build_as BIN PKG VERSION installs the main package PKG of VERSION as
# GOBIN/BIN, for tools whose own names ("client", "server") would collide.
# A BIN built from another version of PKG's module is replaced.
go_build_as() {
	local bin=$1 pkg=$2 version=$3
	if go version -m "$GOBIN/$bin" 2>/dev/null | grep -Eq "^[[:space:]]+path[[:space:]]+$pkg\$" &&
		go version -m "$GOBIN/$bin" | grep -Eq "^[[:space:]]+mod[[:space:]]+[^[:space:]]+[[:space:]]+$version[[:space:]]"; then
		return 0
	fi
	local tmp
	tmp=$(mktemp -d)
	retry env GOBIN="$tmp" go install "$pkg@$version" || { rm -rf "$tmp"; return 1; }
	mkdir -p "$GOBIN"
	mv -f "$tmp/${pkg##*/}" "$GOBIN/$bin"
	rm -rf "$tmp"
}

# go_build_tool BIN MODULE PKG VERSION installs the main package PKG of
# MODULE@VERSION as GOBIN/BIN, built as a tool of a throwaway module: `go
# install PKG@VERSION` refuses a module whose go.mod has replace directives
# (Jaeger's; as a dependency its replaces are ignored and it still builds).
# A BIN built from another version of MODULE is replaced.
go_build_tool() {
	local bin=$1 mod=$2 pkg=$3 version=$4
	if go version -m "$GOBIN/$bin" 2>/dev/null | grep -Eq "^[[:space:]]+path[[:space:]]+$pkg\$" &&
		go version -m "$GOBIN/$bin" | grep -Eq "^[[:space:]]+(mod|dep)[[:space:]]+$mod[[:space:]]+$version[[:space:]]"; then
		return 0
	fi
	local tmp
	tmp=$(mktemp -d)
	(
		cd "$tmp" &&
			go mod init meshwork.invalid/tools/"$bin" >/dev/null 2>&1 &&
			# go get lists every module it adds: hundreds of lines, kept
			# for a failure.
			retry sh -c 'go get -tool "$1" >get.log 2>&1 || { cat get.log >&2; exit 1; }' go-get "$pkg@$version" &&
			go build -o "$tmp/$bin" "$pkg"
	) || { rm -rf "$tmp"; return 1; }
	mkdir -p "$GOBIN"
	mv -f "$tmp/$bin" "$GOBIN/$bin"
	rm -rf "$tmp"
}

group_test() {
	apt_install bind9-dnsutils iproute2 curl nghttp2-client prometheus
	go_build_as grpc-interop-client google.golang.org/grpc/interop/client "$GRPC_VERSION"
	go_build_as grpc-interop-server google.golang.org/grpc/interop/server "$GRPC_VERSION"
}

group_e2e() {
	group_test
	apt_install tshark curl nginx-light systemd-container debootstrap ansible openssh-client bridge-utils chromium
	go_build_tool jaeger github.com/jaegertracing/jaeger github.com/jaegertracing/jaeger/cmd/jaeger "$JAEGER_VERSION"
}

group_bench() {
	apt_install dnsperf iperf3 stunnel4 haproxy redis-server redis-tools postgresql postgresql-contrib wrk
	go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION"
	go_install fortio "fortio.org/fortio@$FORTIO_VERSION"
	go_install ghz "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
}

group_step() {
	go_install step-ca "github.com/smallstep/certificates/cmd/step-ca@$STEP_VERSION" CGO_ENABLED=0
	go_install step "github.com/smallstep/cli/cmd/step@$STEP_VERSION"
}

group_lint() {
	apt_install ansible-lint systemd
}

# The packages of a release are only as reproducible as the packager: an nfpm
# of another version, left by an earlier install, is replaced.
group_release() {
	apt_install dpkg openssh-client
	if ! go version -m "$GOBIN/nfpm" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/goreleaser/nfpm/v2[[:space:]]+$NFPM_VERSION[[:space:]]"; then
		retry go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
	fi
}

[ $# -gt 0 ] || { echo "usage: $0 test|e2e|bench|step|lint|release..." >&2; exit 2; }
for g in "$@"; do
	case $g in
	test | e2e | bench | step | lint | release) "group_$g" ;;
	*) echo "deps.sh: unknown group $g" >&2; exit 2 ;;
	esac
done
