#!/usr/bin/env bash
# lint-ops.sh checks the deployment files with their own tools: the Ansible
# role and playbook with ansible-lint (production profile) and a syntax check,
# and the systemd unit and drop-ins with systemd-analyze (verify, and an
# exposure score of at most 2.5) and systemd-sysusers. scripts/deps.sh lint
# installs the tools.
set -euo pipefail
cd "$(dirname "$0")/.."

(
	cd ansible
	export ANSIBLE_CONFIG=$PWD/ansible.cfg ANSIBLE_NOCOLOR=1
	playbooks=(site.yml rotate-gossip-key.yml rotate-ca-root.yml rotate-cluster-key.yml)
	ansible-lint --profile production --offline "${playbooks[@]}" roles/meshwork tests/render.yml
	for p in "${playbooks[@]}"; do
		ansible-playbook --syntax-check -i inventory/example/hosts.yml "$p" >/dev/null
	done
)
go test -count=1 -run 'TestUnitVerifies|TestSecurityExposure|TestUnitKeepsWhatTheAgentNeeds|TestSysusersParses' ./systemd/
