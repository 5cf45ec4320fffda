#!/usr/bin/env bash
# Runs every benchmark program of bench/ in turn, each against its peer in the
# same run, and writes their reports to bench-results/ (one file each).
# docs/benchmarks.md records the figures and explains each program.
#
#   scripts/bench.sh                 all of them
#   scripts/bench.sh dns transport   only these
#   scripts/bench.sh telemetry       bench/l7 -telemetry: telemetry off
#                                    against on, two meshes side by side
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"

all=(gossip dns raft ca transport realclients l7 telemetry agent)
[ $# -gt 0 ] && all=("$@")
mkdir -p bench-results
for b in "${all[@]}"; do
	if [ "$b" = telemetry ]; then
		echo "== bench/l7 -telemetry"
		go run ./bench/l7 -telemetry 2>&1 | tee "bench-results/$b.txt"
		continue
	fi
	[ -d "bench/$b" ] || { echo "bench.sh: no bench/$b" >&2; exit 2; }
	echo "== bench/$b"
	go run "./bench/$b" 2>&1 | tee "bench-results/$b.txt"
done
