package ca

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/meshwork/meshwork/internal/spiffeid"
)

// Bounds of LeafTTL (docs/pki.md).
const (
	MinLeafTTL = 2 * time.Second
	MaxLeafTTL = 366 * 24 * time.Hour
)

// ConfigError is one wrong key of the `ca:` section of the configuration
// file. Config.Validate returns the first; agent/config reports every one
// under its YAML path.
type ConfigError struct {
	// Key is the key under ca:, such as "leaf_ttl" or "step_ca.url".
	Key string
	// Reason says what is wrong with the value.
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: ca.%s: %s", ErrInvalidConfig, e.Key, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Problems returns every wrong key of c, with its defaults applied, in the
// order of the section.
func (c Config) Problems() []*ConfigError {
	c = c.WithDefaults()
	var out []*ConfigError
	switch c.Provider {
	case ProviderEmbedded:
	case ProviderStepCA:
		out = append(out, c.StepCA.problems()...)
	default:
		out = append(out, &ConfigError{"provider", fmt.Sprintf("%q must be %s or %s", c.Provider, ProviderEmbedded, ProviderStepCA)})
	}
	if err := spiffeid.ValidateTrustDomain(c.TrustDomain); err != nil {
		out = append(out, &ConfigError{"trust_domain", err.Error()})
	}
	if c.LeafTTL < MinLeafTTL || c.LeafTTL > MaxLeafTTL {
		out = append(out, &ConfigError{"leaf_ttl", fmt.Sprintf("%s must be between %s and 366 days (%s)", c.LeafTTL, MinLeafTTL, MaxLeafTTL)})
	}
	return out
}

// problems returns every wrong key of the step_ca section.
func (c StepCAConfig) problems() []*ConfigError {
	var out []*ConfigError
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		out = append(out, &ConfigError{"step_ca.url", fmt.Sprintf("%q must be an https:// URL: https://host[:port]", c.URL)})
	}
	if fp := strings.ToLower(c.RootFingerprint); len(fp) != 64 || strings.Trim(fp, "0123456789abcdef") != "" {
		out = append(out, &ConfigError{"step_ca.root_fingerprint", fmt.Sprintf("%q must be 64 hex digits (step certificate fingerprint)", c.RootFingerprint)})
	}
	if c.Provisioner == "" {
		out = append(out, &ConfigError{"step_ca.provisioner", "is required with provider step-ca"})
	}
	if c.PasswordFile == "" {
		out = append(out, &ConfigError{"step_ca.password_file", "is required with provider step-ca"})
	}
	if c.RootsRefresh < 0 {
		out = append(out, &ConfigError{"step_ca.roots_refresh", fmt.Sprintf("%s must not be negative", c.RootsRefresh)})
	}
	return out
}
