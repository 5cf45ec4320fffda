#!/usr/bin/env bash
# Runs every fuzz target of the module briefly (default 20000 inputs each,
# a few seconds), as CI does: enough to catch a parser that panics on its
# seed corpus or on the first mutations. The argument is go test's -fuzztime:
# a count such as 20000x, or 5000000x for a longer hunt.
set -euo pipefail
fuzztime=${1:-20000x}
cd "$(dirname "$0")/.."
status=0
while IFS= read -r file; do
	pkg=./$(dirname "$file")
	for fn in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		echo "fuzz: $pkg $fn ($fuzztime)"
		if ! go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
			cat /tmp/fuzz-$$.log
			status=1
		fi
	done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
rm -f /tmp/fuzz-$$.log
exit $status
