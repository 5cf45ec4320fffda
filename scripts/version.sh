#!/usr/bin/env bash
# version.sh prints the version of the tree as a semantic version, for the
# build's -ldflags and for release artifacts:
#
#   VERSION=x.y.z        that version (a leading v is dropped); it must be
#                        semver, or the script fails
#   HEAD at tag vX.Y.Z   X.Y.Z, when the tree is clean
#   otherwise            the next patch after the latest vX.Y.Z tag that
#                        HEAD descends from (0.0.0 without one), as a
#                        pre-release: X.Y.(Z+1)-dev+<commit>[.dirty]
#
# A build between releases sorts after the release before it and before the
# next one, and names the commit it came from. `version.sh commit` prints the
# commit alone (12 hex digits, or "unknown" outside a git tree).
set -euo pipefail
cd "$(dirname "$0")/.."

semver='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$'

commit() {
	git rev-parse --short=12 HEAD 2>/dev/null || echo unknown
}

if [ "${1:-}" = commit ]; then
	commit
	exit 0
fi

if [ -n "${VERSION:-}" ]; then
	v=${VERSION#v}
	if ! [[ $v =~ $semver ]]; then
		echo "version.sh: VERSION=$VERSION is not a semantic version (x.y.z, as in 1.4.0 or 1.4.0-rc.1)" >&2
		exit 2
	fi
	echo "$v"
	exit 0
fi

c=$(commit)
dirty=""
if [ "$c" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=.dirty
fi
# The release tags at HEAD, highest first.
if [ -z "$dirty" ]; then
	at=$(git tag --points-at HEAD --list 'v[0-9]*.[0-9]*.[0-9]*' --sort=-v:refname 2>/dev/null |
		grep -E '^v[0-9]+\.[0-9]+\.[0-9]+$' | head -n1 || true)
	if [ -n "$at" ]; then
		echo "${at#v}"
		exit 0
	fi
fi
last=$(git describe --tags --abbrev=0 --match 'v[0-9]*.[0-9]*.[0-9]*' --exclude '*-*' 2>/dev/null || true)
if [[ ${last#v} =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
	next="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.$((BASH_REMATCH[3] + 1))"
else
	next=0.0.0
fi
echo "$next-dev+$c$dirty"
