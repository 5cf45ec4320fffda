#!/usr/bin/env bash
# The Meshwork demo: three agents on this host, on 127.0.0.11, .12 and .13
# with the same ports (the whole of 127/8 is local on Linux, so no root is
# needed), a web service with two instances, and the catalog and DNS answers
# every agent gives for it. Ctrl-C stops and removes everything.
#
# With a terminal it waits for Ctrl-C; without one (CI) it exits after the
# checks, non-zero if one failed.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/meshwork}
[ -x "$BIN" ] || { echo "demo: $BIN is missing; run make build" >&2; exit 1; }
scripts/deps.sh test >/dev/null # dig

work=$(mktemp -d /tmp/meshwork-demo.XXXXXX)
pids=()
cleanup() {
	trap - EXIT INT TERM
	echo
	echo "== stopping the demo"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# wait_for DESC CMD... retries CMD for up to 30 s.
wait_for() {
	local desc=$1
	shift
	for _ in $(seq 1 150); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	echo "demo: timed out waiting for $desc" >&2
	return 1
}

go build -o "$work/hello" ./examples/hello

enc=$("$BIN" keygen)
ck=$("$BIN" keygen)

step "starting three agents"
for i in 1 2 3; do
	ip=127.0.0.1$i
	mkdir -p "$work/n$i"
	cat >"$work/n$i/meshwork.yaml" <<YAML
node: n$i
data_dir: $work/n$i/data
bind: $ip
advertise: $ip
addresses: {http: $ip, dns: $ip}
retry_join: [127.0.0.11]
encrypt: "$enc"
cluster_key: "$ck"
YAML
	if [ "$i" != 1 ]; then
		"$work/hello" -addr "$ip:8080" -name "web-n$i" >"$work/n$i/hello.log" 2>&1 &
		pids+=($!)
		cat >>"$work/n$i/meshwork.yaml" <<YAML
services:
  - name: web
    id: web-n$i
    address: $ip
    port: 8080
    tags: [v1]
    checks:
      - http: http://$ip:8080/health
        interval: 1s
        timeout: 500ms
YAML
	fi
	"$BIN" agent --config "$work/n$i/meshwork.yaml" >"$work/n$i/agent.log" 2>&1 &
	pids+=($!)
	echo "agent n$i on $ip (log: $work/n$i/agent.log)"
done

export MESHWORK_HTTP_ADDR=127.0.0.11:8500
wait_for "three members" bash -c "[ \$($BIN members --format json | grep -c '\"alive\"') -eq 3 ]"
step "membership, as n1 sees it"
run "$BIN" members

for i in 1 2 3; do
	wait_for "two passing web instances on n$i" bash -c \
		"[ \$($BIN catalog service web --passing --http-addr 127.0.0.1$i:8500 --format json | grep -c '\"node\"') -eq 2 ]"
done
step "the web service, in every agent's catalog"
for i in 1 2 3; do
	run "$BIN" catalog service web --http-addr "127.0.0.1$i:8500"
done

step "DNS: A and SRV answers from n1's local DNS server"
run dig +noall +answer @127.0.0.11 -p 8600 web.service.mesh A
run dig +noall +answer +additional @127.0.0.11 -p 8600 _web._tcp.service.mesh SRV

if [ -t 0 ]; then
	step "the mesh is running; press Ctrl-C to stop it"
	wait
fi
