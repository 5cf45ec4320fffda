package ca

import (
	"fmt"
	"time"
)

// Provider names for Config.Provider.
const (
	ProviderEmbedded = "embedded"
	ProviderStepCA   = "step-ca"
)

// Defaults.
const (
	DefaultTrustDomain     = "meshwork.local"
	DefaultLeafTTL         = 24 * time.Hour
	DefaultTokenTTL        = 10 * time.Minute
	MaxTokenTTL            = time.Hour // smallstep's token package caps validity at one hour
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 365 * 24 * time.Hour
	DefaultProvisioner     = "meshwork"
	DefaultRenewFraction   = 2.0 / 3.0
	DefaultJitter          = 0.05
	DefaultRotationSpread  = 30 * time.Second
	DefaultRotationCheck   = 10 * time.Second
)

// Config is the `ca:` section of the agent configuration file. The agent
// turns it into a ServerConfig, a ManagerConfig and, for step-ca, a
// StepCAConfig.
type Config struct {
	// Provider is "embedded" (the servers' own CA) or "step-ca". Default
	// "embedded".
	Provider string `yaml:"provider"`
	// TrustDomain is the SPIFFE trust domain. Default "meshwork.local".
	TrustDomain string `yaml:"trust_domain"`
	// LeafTTL is the lifetime of leaf certificates. Default 24h.
	LeafTTL time.Duration `yaml:"leaf_ttl"`
	// TokenFile holds a bootstrap token made by `meshwork ca token <node>`;
	// read once, when the agent has no valid certificate. Default none.
	TokenFile string `yaml:"token_file"`
	// StateKeyFile (servers, embedded provider) holds the base64 key that
	// seals the CA's private keys in the replicated state; the same on every
	// server, mode 0600. Default <data_dir>/ca/state.key, created by the
	// first server (and by --dev) when missing.
	StateKeyFile string `yaml:"state_key_file"`
	// StepCA configures provider "step-ca".
	StepCA StepCAConfig `yaml:"step_ca"`
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Provider == "" {
		c.Provider = ProviderEmbedded
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.LeafTTL == 0 {
		c.LeafTTL = DefaultLeafTTL
	}
	return c
}

// Validate checks c after defaults; its error is the first of Problems.
func (c Config) Validate() error {
	if p := c.Problems(); len(p) > 0 {
		return p[0]
	}
	return nil
}

// ServerConfig configures the embedded CA of a server agent.
type ServerConfig struct {
	// TrustDomain is the SPIFFE trust domain. Required.
	TrustDomain string
	// Node is this server's node name; leaves asked for in process
	// (LocalIssuer) must be for it. Required.
	Node string
	// StateKey seals private keys in the replicated state (32 bytes, the
	// same on every server; see LoadStateKey). Required.
	StateKey []byte
	// LeafTTL is the lifetime of the leaves this CA signs. Default 24h.
	LeafTTL time.Duration
	// TokenTTL is the default lifetime of bootstrap tokens. Default 10m,
	// at most 1h.
	TokenTTL time.Duration
	// RootTTL is the lifetime of a new root. Default 10 years.
	RootTTL time.Duration
	// IntermediateTTL is the lifetime of a new intermediate; one is replaced
	// under the same root once two thirds of it have passed. Default 1 year.
	IntermediateTTL time.Duration
	// ProvisionerName names the JWK provisioner of bootstrap tokens (the
	// token's issuer). Default "meshwork".
	ProvisionerName string
	// RotationCheck is how often a server checks whether a root rotation can
	// complete; it also checks after every issuance. Default 10s.
	RotationCheck time.Duration
	// RetireGrace is how long a rotation waits, once every node's latest
	// leaf is under the new root, before retiring the old root: the time
	// between a leaf's issuance (when the server records it) and its
	// installation on the agent. Default 10s.
	RetireGrace time.Duration
	// StateTimeout bounds each state store call. Default 10s.
	StateTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *ServerConfig) setDefaults() {
	if c.LeafTTL == 0 {
		c.LeafTTL = DefaultLeafTTL
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.RootTTL == 0 {
		c.RootTTL = DefaultRootTTL
	}
	if c.IntermediateTTL == 0 {
		c.IntermediateTTL = DefaultIntermediateTTL
	}
	if c.ProvisionerName == "" {
		c.ProvisionerName = DefaultProvisioner
	}
	if c.RotationCheck == 0 {
		c.RotationCheck = DefaultRotationCheck
	}
	if c.StateTimeout == 0 {
		c.StateTimeout = 10 * time.Second
	}
	if c.RetireGrace == 0 {
		c.RetireGrace = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks c after defaults.
func (c ServerConfig) Validate() error {
	c.setDefaults()
	if err := ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("%w: TrustDomain: %v", ErrInvalidConfig, err)
	}
	if err := ValidateName("node", c.Node); err != nil {
		return fmt.Errorf("%w: Node: %v", ErrInvalidConfig, err)
	}
	if len(c.StateKey) != StateKeySize {
		return fmt.Errorf("%w: StateKey is %d bytes, want %d", ErrInvalidConfig, len(c.StateKey), StateKeySize)
	}
	if c.LeafTTL < 2*time.Second {
		return fmt.Errorf("%w: LeafTTL %s: want at least 2s", ErrInvalidConfig, c.LeafTTL)
	}
	if c.TokenTTL < 10*time.Second || c.TokenTTL > MaxTokenTTL {
		return fmt.Errorf("%w: TokenTTL %s: want between 10s and %s", ErrInvalidConfig, c.TokenTTL, MaxTokenTTL)
	}
	if c.IntermediateTTL < 3*c.LeafTTL {
		return fmt.Errorf("%w: IntermediateTTL %s: want at least three leaf lifetimes (%s)", ErrInvalidConfig, c.IntermediateTTL, 3*c.LeafTTL)
	}
	if c.RootTTL < c.IntermediateTTL {
		return fmt.Errorf("%w: RootTTL %s: want at least IntermediateTTL (%s)", ErrInvalidConfig, c.RootTTL, c.IntermediateTTL)
	}
	if err := ValidateName("provisioner", c.ProvisionerName); err != nil {
		return fmt.Errorf("%w: ProvisionerName: %v", ErrInvalidConfig, err)
	}
	if c.RetireGrace < 0 {
		return fmt.Errorf("%w: RetireGrace %s: want at least 0", ErrInvalidConfig, c.RetireGrace)
	}
	if c.RotationCheck < 10*time.Millisecond {
		return fmt.Errorf("%w: RotationCheck %s: want at least 10ms", ErrInvalidConfig, c.RotationCheck)
	}
	return nil
}
