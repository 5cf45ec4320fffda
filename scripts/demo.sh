#!/usr/bin/env bash
# The Meshwork demo: three agents on this host, on 127.0.0.11, .12 and .13
# with the same ports (the whole of 127/8 is local on Linux, so no root is
# needed). All three are Raft servers (bootstrap_expect 3) that share one CA
# state key; each signs its own leaf from the mesh CA. A web service runs on
# n2 and n3. The demo shows membership, the catalog, DNS, then an app on n1
# calling web.service.mesh by name: n1's DNS answers a virtual IP of n1, and
# n1's agent carries the call over QUIC with mutual TLS to the instance on n2
# or n3. Then an Intention denies the call, and deleting it allows it again.
# Last, n3's agent stops gracefully (SIGTERM): it leaves and drains, and the
# calls go to n2.
# ACLs are on and deny by default: the leader makes the management token
# from acl.tokens.initial_management (a secret from `meshwork acl secret`),
# the operator steps send it, each agent gets a token of its own made through
# the API, and a call without a token is shown refused where the same call
# with the token goes through; the catalog and DNS stay open to anyone.
# Ctrl-C stops and removes everything.
#
# With a terminal it waits for Ctrl-C; without one (CI) it exits after the
# checks, non-zero if one failed.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/meshwork}
[ -x "$BIN" ] || { echo "demo: $BIN is missing; run make build" >&2; exit 1; }
scripts/deps.sh test >/dev/null # dig
command -v curl >/dev/null || { echo "demo: curl is missing (apt-get install curl)" >&2; exit 1; }

work=$(mktemp -d /tmp/meshwork-demo.XXXXXX)
pids=()
declare -a agent_pid=()
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
# run CMD... shows CMD, its arguments quoted where a shell needs it, then runs it.
run() {
	local a shown=()
	for a; do
		if [[ $a =~ ^[-A-Za-z0-9_./:=@,+%]+$ ]]; then shown+=("$a"); else shown+=("'$a'"); fi
	done
	printf '$ %s\n' "${shown[*]}"
	"$@"
}

# wait_for DESC CMD... retries CMD for up to 90 s (a Raft election and the
# CA's first keys take a few seconds on a busy machine).
wait_for() {
	local desc=$1
	shift
	for _ in $(seq 1 450); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	echo "demo: timed out waiting for $desc" >&2
	return 1
}

go build -o "$work/hello" ./examples/hello

enc=$("$BIN" keygen)
ck=$("$BIN" keygen)
# Only servers hold the server key: with it, no agent holding cluster_key can
# pass for a server (docs/security.md). All three agents here are servers.
sk=$("$BIN" keygen)
# Every server seals the CA keys in the replicated state with the same key.
(umask 077 && "$BIN" ca keygen >"$work/ca-state.key")
# The secret of the first management token, which the leader makes into the
# token (acl.tokens.initial_management); the operator steps below send it.
(umask 077 && "$BIN" acl secret >"$work/management.token")
mgmt=$(cat "$work/management.token")

step "starting three agents"
for i in 1 2 3; do
	ip=127.0.0.1$i
	mkdir -p "$work/n$i"
	# The agent's own token: its secret now, the token itself through the
	# API once the servers have a leader (below).
	(umask 077 && "$BIN" acl secret >"$work/n$i/agent.token")
	# The file holds secrets: readable by its owner only.
	touch "$work/n$i/meshwork.yaml"
	chmod 600 "$work/n$i/meshwork.yaml"
	cat >"$work/n$i/meshwork.yaml" <<YAML
node: n$i
data_dir: $work/n$i/data
bind: $ip
advertise: $ip
addresses: {http: $ip, dns: $ip}
retry_join: [127.0.0.11]
encrypt: "$enc"
cluster_key: "$ck"
server_key: "$sk"
server: true
bootstrap_expect: 3
ca:
  state_key_file: $work/ca-state.key
tunnel:
  vip_range: 127.24$i.0.0/16
acl:
  enabled: true
  default_policy: deny
  tokens:
    initial_management: "$mgmt"
    agent_file: $work/n$i/agent.token
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
    tags: [v$((i - 1))]
    checks:
      - http: http://$ip:8080/health
        interval: 1s
        timeout: 500ms
YAML
	fi
	"$BIN" agent --config "$work/n$i/meshwork.yaml" >"$work/n$i/agent.log" 2>&1 &
	pids+=($!)
	agent_pid[i]=$!
	echo "agent n$i on $ip (log: $work/n$i/agent.log)"
done

"$BIN" validate "$work/n1/meshwork.yaml" >/dev/null

export MESHWORK_HTTP_ADDR=127.0.0.11:8500
# The operator's token for every command below; the calls shown without a
# token unset it (env -u), and are the anonymous token's.
export MESHWORK_HTTP_TOKEN_FILE=$work/management.token
# Until the leader has made the management token, calls with it are refused
# (ACL token not found); wait_for rides that out.
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

step "Raft: three servers, one leader"
wait_for "a Raft leader" bash -c "$BIN operator raft list-peers | grep -q leader"
run "$BIN" operator raft list-peers

# The three agents are servers, whose own leaves the CA signs in process
# without a token; a client agent's certificate names only what its token
# may write. Each gets its token as a client would.
step "ACLs: the management token, and a token for each agent made through the API"
run "$BIN" acl token self
for i in 1 2 3; do
	# An agent writes its own node and the services it runs, nothing else.
	{
		printf 'name: agent-n%s\ndescription: the agent of n%s\nrules:\n  node: {n%s: write}\n' "$i" "$i" "$i"
		[ "$i" = 1 ] || printf '  service: {web: write}\n'
	} >"$work/agent-n$i.policy.yaml"
	run "$BIN" acl policy create -f "$work/agent-n$i.policy.yaml"
	# The secret is the one in n$i's agent_file; the answer repeats it, so
	# only the accessor ID is shown.
	run "$BIN" acl token create --policy "agent-n$i" --description "agent of n$i" \
		--secret-file "$work/n$i/agent.token" | grep -v '^SecretID'
done
run "$BIN" acl token list
echo "n2's agent_file holds the secret of its token:"
run "$BIN" acl token self --token-file "$work/n2/agent.token"

step "identities: each agent's leaf from the mesh CA"
for i in 1 2 3; do
	wait_for "the leaf of n$i" "$BIN" ca cert --http-addr "127.0.0.1$i:8500"
done
run "$BIN" ca roots
for i in 1 2 3; do
	run "$BIN" ca cert --http-addr "127.0.0.1$i:8500"
done

# call asks n1's DNS for web.service.mesh, then fetches it from n1, as an app
# on n1 would; it prints hello's answer, which names the instance.
vip=""
call() {
	vip=$(dig +short @127.0.0.11 -p 8600 web.service.mesh A | head -n1)
	[ -n "$vip" ] || return 1
	curl -sS --max-time 5 "http://$vip:8080/"
}

step "the mesh starts closed: servers deny what no Intention allows"
wait_for "a virtual IP for web on n1" bash -c "dig +short @127.0.0.11 -p 8600 web.service.mesh A | grep -q '^127\.241\.'"
run dig +noall +answer @127.0.0.11 -p 8600 web.service.mesh A
run dig +noall +answer @127.0.0.11 -p 8600 web.service.direct.mesh A
if out=$(call 2>&1); then
	echo "demo: the call went through with no policy: $out" >&2
	exit 1
fi
echo "refused, as expected: $out"

step "ACLs deny by default: without a token the call is refused, with one it goes through"
cat >"$work/allow.yaml" <<YAML
kind: IntentionDefaults
name: default
action: allow
YAML
echo "without a token (anonymous): the catalog is open to read, as DNS is, and nothing else"
run env -u MESHWORK_HTTP_TOKEN_FILE "$BIN" catalog service web
printf '$ env -u MESHWORK_HTTP_TOKEN_FILE %s policy apply -f %s\n' "$BIN" "$work/allow.yaml"
if out=$(env -u MESHWORK_HTTP_TOKEN_FILE "$BIN" policy apply -f "$work/allow.yaml" 2>&1); then
	echo "demo: a call without a token changed the policy: $out" >&2
	exit 1
fi
echo "$out"
case $out in
*"permission denied: token lacks policy:write on \"IntentionDefaults\""*) echo "refused, as expected" ;;
*) echo "demo: the anonymous call failed, but not with the ACL refusal: $out" >&2; exit 1 ;;
esac

step "open the mesh: IntentionDefaults allow, applied with the operator's token"
run "$BIN" policy apply -f "$work/allow.yaml"
wait_for "a call through the tunnel" call

step "an app on n1 calls web.service.mesh by name, through the tunnel"
echo "n1's DNS answers $vip, a virtual IP on n1; n1's agent carries each connection over QUIC+mTLS to n2 or n3"
declare -A served=()
for n in 1 2 3 4 5 6; do
	out=$(call)
	echo "call $n: $out"
	case $out in
	*web-n2*) served[n2]=1 ;;
	*web-n3*) served[n3]=1 ;;
	*) echo "demo: unexpected answer: $out" >&2; exit 1 ;;
	esac
done
echo "instances that answered: ${!served[*]}"
run "$BIN" catalog nodes

step "an Intention denies web to every caller"
cat >"$work/deny.yaml" <<YAML
kind: Intention
name: web
sources:
  - name: "*"
    action: deny
    description: web is closed for maintenance
YAML
run "$BIN" policy apply -f "$work/deny.yaml"
deny_applies() { ! call >/dev/null 2>&1; }
wait_for "the deny to apply" deny_applies
if out=$(call 2>&1); then
	echo "demo: the call went through despite the deny: $out" >&2
	exit 1
fi
echo "refused: $out"
grep -h 'msg="stream refused"' "$work"/n[23]/agent.log | tail -n1 | sed 's/^/receiver log: /'

step "deleting the Intention allows the call again"
run "$BIN" policy delete Intention web
wait_for "the call to go through again" call
run call

step "per request: web speaks HTTP; a header canary and a 90/10 split"
echo "n2's instance is tagged v1, n3's v2. Once web's protocol is http, n1's agent routes each request on its own."
cat >"$work/l7.yaml" <<YAML
kind: ServiceDefaults
name: web
protocol: http
---
kind: Split
name: web
splits:
  - {weight: 90, subset: {tags: [v1]}}
  - {weight: 10, subset: {tags: [v2]}}
---
kind: Split
name: web-canary
service: web
splits:
  - {weight: 100, subset: {tags: [v2]}}
---
kind: Route
name: web
routes:
  - match: {headers: [{name: x-canary, exact: "1"}]}
    split: web-canary
YAML
cat "$work/l7.yaml"
run "$BIN" policy apply -f "$work/l7.yaml"
# canary_only is true once five marked requests in a row reach n3.
canary_only() {
	[ "$(curl -sS --max-time 5 -H 'x-canary: 1' "http://$vip:8080/?[1-5]" | grep -c web-n3)" -eq 5 ]
}
wait_for "the route to reach n1" canary_only
echo "five requests marked x-canary: 1, on one keep-alive connection:"
curl -sS --max-time 5 -H 'x-canary: 1' "http://$vip:8080/?[1-5]" | sed 's/^/  /'
echo "200 unmarked requests, on one keep-alive connection, by instance:"
counts=$(curl -sS --max-time 20 "http://$vip:8080/?[1-200]" | grep -oE 'web-n[23]' | sort | uniq -c)
echo "$counts" | sed 's/^/  /'
v1=$(echo "$counts" | awk '$2 == "web-n2" {print $1}')
v1=${v1:-0}
if [ "$v1" -lt 150 ] || [ "$v1" -gt 196 ]; then
	echo "demo: the 90/10 split sent $v1 of 200 requests to v1" >&2
	exit 1
fi

step "n1's data plane: its virtual IP listeners and its connections to n2 and n3"
run "$BIN" tunnel status

step "n3's agent stops as systemd stops it: it leaves, drains its tunnel, and calls go to n2"
run kill -TERM "${agent_pid[3]}"
wait "${agent_pid[3]}" || true
grep -h -E 'msg="(leaving the cluster|tunnel drained[^"]*|draining the tunnel)"' "$work/n3/agent.log" | sed 's/^/n3 log: /'
for n in 1 2 3; do
	out=$(call)
	echo "call $n: $out"
	case $out in
	*web-n2*) ;;
	*) echo "demo: a call after n3 stopped was not served by n2: $out" >&2; exit 1 ;;
	esac
done
run "$BIN" members

if [ -t 0 ]; then
	step "the mesh is running; press Ctrl-C to stop it"
	wait
fi
