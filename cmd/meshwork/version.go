package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version and commit are stamped at link time, by the Makefile and
// scripts/release.sh, with -ldflags "-X main.version=... -X main.commit=...":
// version is a semantic version (scripts/version.sh: x.y.z for a release,
// x.y.z-dev+<commit> between releases), commit the git commit, 12 hex digits.
// A plain `go build` or `go test` stamps neither; init fills them in from what
// the Go toolchain recorded, so that every binary reports both.
var version, commit string

func init() {
	info, _ := debug.ReadBuildInfo()
	version, commit = resolveVersion(version, commit, info)
	subcommands = append(subcommands, newVersionCmd)
}

// devVersion is the version of a build that was not given one: a semantic
// version that sorts before every release.
const devVersion = "0.0.0-dev"

// unknownCommit is the commit of a build made outside a git tree.
const unknownCommit = "unknown"

// resolveVersion returns the version and commit a binary reports, from the
// values stamped at link time and the build information the toolchain
// recorded (nil when there is none). A stamped value wins, a leading "v"
// dropped from the version; the stamped version is reported as given even
// when it is not semver (scripts/version.sh is what enforces that for
// builds). Without a stamp the commit is the toolchain's vcs.revision, and the
// version 0.0.0-dev with the commit, and ".dirty" for a modified tree, as
// build metadata.
func resolveVersion(stampedVersion, stampedCommit string, info *debug.BuildInfo) (v, c string) {
	var rev string
	var modified bool
	if info != nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}

	c = stampedCommit
	if c == "" {
		c = rev
	}
	if c == "" {
		c = unknownCommit
	}

	v = strings.TrimPrefix(stampedVersion, "v")
	if v == "" {
		v = devVersion
		if c != unknownCommit {
			v += "+" + c
			if stampedCommit == "" && modified {
				v += ".dirty"
			}
		}
	}
	return v, c
}

// versionInfo is what `meshwork version --format json` prints.
type versionInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func newVersionCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and the commit of this binary",
		Long: "Print this binary's semantic version (x.y.z for a release, x.y.z-dev+<commit>\n" +
			"between releases), the git commit it was built from, and its Go version.\n" +
			"A running agent reports its own under \"build\" in GET /v1/agent/self.",
		Example: "  meshwork version\n  meshwork version --format json | jq -r .version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			return printVersion(cmd, format, info)
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// printVersion writes info in format, "text" or "json".
func printVersion(cmd *cobra.Command, format string, info versionInfo) error {
	out := cmd.OutOrStdout()
	switch format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	case "text":
		_, err := fmt.Fprintf(out, "meshwork %s\ncommit   %s\ngo       %s %s\n", info.Version, info.Commit, info.Go, info.Platform)
		return err
	}
	return fmt.Errorf("version: --format %q: want text or json", format)
}
