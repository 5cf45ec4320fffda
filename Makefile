# Meshwork. `make demo` runs a mesh on this host; `make test` passes the tests.
# Both install what they need (Debian packages, pinned Go tools) through
# scripts/deps.sh, so a fresh Debian machine with Go needs nothing else.

GO       ?= go
# A semantic version and the commit, stamped into the binary (scripts/version.sh:
# x.y.z at a release tag, the next patch as x.y.z-dev+<commit> between them).
VERSION  ?= $(shell scripts/version.sh)
COMMIT   := $(shell scripts/version.sh commit)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin/meshwork
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a target with "context deadline exceeded" and no failing input when a
# worker is busy at the deadline (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 20000x
# smallstep's CA links every database and cloud KMS it supports; the mesh CA
# keeps its state in Raft and its keys in software, so leave them out: a
# smaller binary starts with less mapped memory.
TAGS     ?= nobadger nobbolt nomysql nopgx nocloudkms noawskms noazurekms notpmkms

.PHONY: all build test unit fuzz e2e demo bench lint release clean role role-files

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/meshwork

# test: vet, unit and integration tests with the race detector, then a short
# run of every fuzz target.
test: unit fuzz

unit:
	scripts/deps.sh test step
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# e2e: multi-host scenarios with the real binary, in network namespaces and
# on booted systemd hosts. Needs root. The booted hosts measure how long
# connections wait while agents restart under load, so they run alone: the
# release builds, which compile everything twice, run beside the namespaces.
e2e: build
	scripts/deps.sh e2e step
	$(GO) test -tags e2e -count=1 -timeout 30m ./test/netns/... ./test/release/...
	$(GO) test -tags e2e -count=1 -timeout 45m ./test/nspawn/...

demo: build
	scripts/demo.sh

bench: build
	scripts/deps.sh bench
	scripts/bench.sh

# release: the tarballs, .deb packages, SHA256SUMS and, with SIGNING_KEY, its
# signature, for linux amd64 and arm64, in OUT (docs/releases.md).
#   make release VERSION=1.4.0 [SIGNING_KEY=path/to/ed25519-key] [OUT=dist]
OUT      ?= dist
ARCHES   ?= amd64 arm64
release:
	@case "$(origin VERSION)" in command*|environment*) ;; *) echo "make release: give the version: make release VERSION=x.y.z"; exit 2;; esac
	VERSION="$(VERSION)" OUT="$(OUT)" ARCHES="$(ARCHES)" TAGS="$(TAGS)" SIGNING_KEY="$(SIGNING_KEY)" scripts/release.sh

lint:
	scripts/deps.sh lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...
	scripts/lint-ops.sh

clean:
	rm -rf bin dist

# role-files: copy the unit and drop-ins of systemd/ into the Ansible role,
# which ships real files so that it works outside this repository.
# ansible/ansible_test.go fails when a copy differs from its source.
ROLE_FILES := meshwork.service meshwork.sysusers sysctl-meshwork.conf
role-files:
	for f in $(ROLE_FILES); do cp systemd/$$f ansible/roles/meshwork/files/$$f; done

# role: pack the role into $(ROLE_OUT)/meshwork-role-$(VERSION).tar.gz, one
# top-level directory meshwork/, with fixed owners, order and times so that
# the same tree packs to the same bytes. Install it with
#   ansible-galaxy role install -p ROLES_PATH bin/meshwork-role-$(VERSION).tar.gz,,meshwork
# (Not in dist/, which holds a release's artifacts and nothing else.)
ROLE_OUT     ?= bin
ROLE_TARBALL := $(ROLE_OUT)/meshwork-role-$(VERSION).tar.gz
role:
	@mkdir -p $(ROLE_OUT)
	@for f in $(ROLE_FILES); do cmp -s systemd/$$f ansible/roles/meshwork/files/$$f || { echo "ansible/roles/meshwork/files/$$f differs from systemd/$$f: run make role-files"; exit 1; }; done
	tar -C ansible/roles --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		--exclude='*.retry' --exclude='__pycache__' -cf - meshwork | gzip -n > $(ROLE_TARBALL)
	@echo $(ROLE_TARBALL)
