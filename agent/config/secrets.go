package config

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// secretKeys are the configuration keys whose values are secrets.
var secretKeys = []string{"encrypt", "cluster_key", "accept_cluster_keys", "server_key", "accept_server_keys", "acl.tokens.agent", "acl.tokens.initial_management"}

// AgentGroup is the group the packaged agent runs as. Files that hold
// secrets may be readable by it (root:meshwork 0640), as the Ansible role
// installs them.
const AgentGroup = "meshwork"

// noteSecrets remembers that the file at path sets secret keys, so that
// SecretWarnings can check who may read it.
func (l *Loaded) noteSecrets(path string, seen map[string]int) {
	var keys []string
	for _, k := range secretKeys {
		if _, ok := seen[k]; ok {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		l.secretFiles = append(l.secretFiles, secretFile{path: path, holds: strings.Join(keys, " and ")})
	}
}

type secretFile struct {
	path  string
	holds string // what it holds, for the warning
}

// SecretWarnings returns one warning for each file that holds a secret (a
// config file setting encrypt, cluster_key, server_key, accept_cluster_keys,
// accept_server_keys or an acl.tokens secret, or a file named by
// ca.token_file, ca.state_key_file,
// ca.step_ca's password_file and key_file or acl.tokens.agent_file) which
// users other than its owner and the agent's group can read, or which
// others than its owner can change. The configuration is
// still valid: the agent starts, and `meshwork validate` and the agent
// print the warnings.
func (l *Loaded) SecretWarnings() []string {
	files := append([]secretFile(nil), l.secretFiles...)
	for _, f := range []struct{ key, path string }{
		{"ca.token_file", l.CA.TokenFile},
		{"ca.state_key_file", l.CA.StateKeyFile},
		{"ca.step_ca.password_file", l.CA.StepCA.PasswordFile},
		{"ca.step_ca.key_file", l.CA.StepCA.KeyFile},
		{"acl.tokens.agent_file", l.ACL.Tokens.AgentFile},
	} {
		if f.path != "" {
			files = append(files, secretFile{path: f.path, holds: "the secret of " + f.key})
		}
	}
	var out []string
	for _, f := range files {
		st, err := os.Stat(f.path)
		if err != nil {
			continue // a missing file is an error of its own, elsewhere
		}
		if why := exposure(st); why != "" {
			out = append(out, fmt.Sprintf("%s holds %s, but %s; make it 0600, or 0640 with group %s", f.path, f.holds, why, AgentGroup))
		}
	}
	return out
}

// exposure says who besides the file's owner can read or change it, or ""
// when nobody but the owner and the agent's group can read it.
func exposure(st fs.FileInfo) string {
	mode := st.Mode().Perm()
	switch {
	case mode&0o007 != 0:
		return fmt.Sprintf("its mode %04o lets every user on the host at it", mode)
	case mode&0o020 != 0:
		return fmt.Sprintf("its mode %04o lets its group change it", mode)
	case mode&0o040 != 0:
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || int(sys.Gid) == os.Getegid() {
			return ""
		}
		name := strconv.FormatUint(uint64(sys.Gid), 10)
		if g, err := user.LookupGroupId(name); err == nil {
			name = g.Name
		}
		if name == AgentGroup {
			return ""
		}
		return fmt.Sprintf("its mode %04o lets group %s read it", mode, name)
	}
	return ""
}
