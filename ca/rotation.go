package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Root rotation, in three steps:
//
//  1. Rotate adds a new root, trusted alongside the old one, and a new
//     intermediate signed by the new root and cross-signed by the old one.
//     New leaves come from it. Their chain carries both copies of the
//     intermediate, so a peer whose bundle still holds only the old root
//     verifies them as well as one that already holds both: no handshake
//     depends on how fast the new bundle spreads.
//  2. Agents see the bundle's active root change and renew (spread over
//     ManagerConfig.RotationSpread). Servers record the root of every leaf
//     they issue (KeyLeafPrefix+node).
//  3. Once every live node's latest unexpired leaf is under the new root,
//     any server retires the old root (CAS): the bundle drops it and the
//     cross-signed copy leaves new chains.

// RotationStatus describes a root rotation.
type RotationStatus struct {
	// InProgress is true between Rotate and the old root's retirement.
	InProgress bool `json:"in_progress"`
	// From and To are the fingerprints of the old and the new root.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// StartedAt is when Rotate ran.
	StartedAt time.Time `json:"started_at,omitzero"`
	// Pending lists the nodes that still hold a leaf under the old root.
	Pending []string `json:"pending,omitempty"`
	// Retired lists the roots retired so far, oldest first.
	Retired []RetiredRoot `json:"retired,omitempty"`
}

// RetiredRoot is a root that is no longer trusted.
type RetiredRoot struct {
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
	RetiredAt   time.Time `json:"retired_at"`
}

// Rotate starts a root rotation and returns its status. It fails with
// ErrRotationInProgress while one is under way.
func (s *Server) Rotate(ctx context.Context) (RotationStatus, error) {
	if _, err := s.signer(); err != nil {
		return RotationStatus{}, fmt.Errorf("ca: rotate: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StateTimeout)
	defer cancel()
	var rot rotationState
	var wrote int // the generation of the new root
	err := casLoop(ctx, s.state, KeyAuthority, func(old []byte) ([]byte, bool, error) {
		if old == nil {
			return nil, false, ErrNotReady
		}
		st, err := decodeAuthorityState(old)
		if err != nil {
			return nil, false, err
		}
		if st.Rotation != nil {
			return nil, false, ErrRotationInProgress
		}
		curCert, curKey, err := s.openRoot(st, st.Issuer.Root)
		if err != nil {
			return nil, false, err
		}
		now := s.cfg.Now()
		gen := st.Generation + 1
		root, rootKey, err := newRoot(st.TrustDomain, gen, now, s.cfg.RootTTL)
		if err != nil {
			return nil, false, err
		}
		sealed, err := s.sealKey(purposeRootKey, rootKey)
		if err != nil {
			return nil, false, err
		}
		if st.Issuer, err = s.newIssuer(gen, root, rootKey, curCert, curKey, now); err != nil {
			return nil, false, err
		}
		st.Generation, wrote = gen, gen
		st.Roots = append(st.Roots, rootEntry{Generation: gen, Cert: root.Raw, SealedKey: sealed})
		rot = rotationState{From: Fingerprint(curCert), To: Fingerprint(root), StartedAt: now}
		st.Rotation = &rot
		b, err := json.Marshal(st)
		return b, true, err
	})
	if err != nil {
		return RotationStatus{}, fmt.Errorf("ca: rotate: %w", err)
	}
	// The caller's next read (roots, rotation status) comes from memory:
	// wait for the new generation there (with the rotation, or past it).
	if err := s.awaitLoaded(ctx, func(st *authorityState) bool { return st.Generation >= wrote }); err != nil {
		return RotationStatus{}, fmt.Errorf("ca: rotate: the rotation is stored but not loaded yet: %w", err)
	}
	s.m.rotations.Inc()
	s.log.Info("ca root rotation started", "from", rot.From, "to", rot.To)
	return RotationStatus{InProgress: true, From: rot.From, To: rot.To, StartedAt: rot.StartedAt}, nil
}

// openRoot finds the root with fingerprint fp in st and opens its key.
func (s *Server) openRoot(st *authorityState, fp string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	for _, r := range st.Roots {
		c, err := x509.ParseCertificate(r.Cert)
		if err != nil {
			return nil, nil, fmt.Errorf("CA state: root: %w", err)
		}
		if Fingerprint(c) != fp {
			continue
		}
		der, err := open(s.cfg.StateKey, purposeRootKey, r.SealedKey)
		if err != nil {
			return nil, nil, err
		}
		k, err := parseKey(der)
		if err != nil {
			return nil, nil, fmt.Errorf("CA state: root key: %w", err)
		}
		return c, k, nil
	}
	return nil, nil, fmt.Errorf("CA state: root %s not found", fp)
}

// RotationStatus reports the rotation in progress, if any, and the nodes it
// waits for.
func (s *Server) RotationStatus(ctx context.Context) (RotationStatus, error) {
	sg, err := s.signer()
	if err != nil {
		return RotationStatus{}, fmt.Errorf("ca: rotation status: %w", err)
	}
	st := RotationStatus{}
	for _, r := range sg.raw.Retired {
		st.Retired = append(st.Retired, RetiredRoot(r))
	}
	if rot := sg.raw.Rotation; rot != nil {
		st.InProgress, st.From, st.To, st.StartedAt = true, rot.From, rot.To, rot.StartedAt
		ctx, cancel := context.WithTimeout(ctx, s.cfg.StateTimeout)
		defer cancel()
		if st.Pending, _, err = s.pendingNodes(ctx, rot.To); err != nil {
			return st, fmt.Errorf("ca: rotation status: %w", err)
		}
	}
	return st, nil
}

// maintainLoop completes rotations and replaces ageing intermediates, on a
// ticker and whenever an issuance during a rotation kicks it.
func (s *Server) maintainLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.RotationCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		if err := s.maintain(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("ca maintenance failed", "err", err)
		}
	}
}

// maintain runs one pass of the maintenance.
func (s *Server) maintain(ctx context.Context) error {
	sg := s.cur.Load()
	if sg == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StateTimeout)
	defer cancel()
	if rot := sg.raw.Rotation; rot != nil {
		pending, gone, err := s.pendingNodes(ctx, rot.To)
		if err != nil {
			return err
		}
		s.m.rotationPending.Set(float64(len(pending)))
		if len(gone) > 0 {
			if err := s.forgetNodes(ctx, gone); err != nil {
				return err
			}
		}
		if len(pending) > 0 {
			s.clearSince = time.Time{}
			return nil
		}
		// Every leaf is under the new root, but the last ones may still be
		// on their way to their agents: wait RetireGrace.
		now := s.cfg.Now()
		if s.clearSince.IsZero() || s.clearFor != rot.To {
			s.clearSince, s.clearFor = now, rot.To
		}
		if wait := s.clearSince.Add(s.cfg.RetireGrace).Sub(now); wait > 0 {
			time.AfterFunc(wait, s.kickMaintenance)
			return nil
		}
		return s.retire(ctx, rot.To)
	}
	s.m.rotationPending.Set(0)
	// Replace the intermediate at two thirds of its life, unless its root
	// ends first: then only a root rotation helps (the root expiry metric
	// says so), and a new intermediate would not live longer.
	inter := sg.chain[0]
	aged := s.cfg.Now().After(inter.NotBefore.Add(inter.NotAfter.Sub(inter.NotBefore) * 2 / 3))
	if aged && inter.NotAfter.Before(sg.activeRoot().NotAfter.Add(-s.cfg.LeafTTL)) {
		return s.renewIntermediate(ctx, Fingerprint(inter))
	}
	return nil
}

// pendingNodes returns the nodes whose latest unexpired leaf is not under
// root to, and the recorded nodes whose leaf expired a lifetime ago (gone).
// The nodes considered are the live ones when ServerDeps.LiveNodes is set,
// else every node the CA ever issued to.
func (s *Server) pendingNodes(ctx context.Context, to string) (pending, gone []string, err error) {
	var nodes []string
	live := s.deps.LiveNodes != nil
	if live {
		nodes = s.deps.LiveNodes()
	} else {
		for i := range nodeShards {
			val, _, err := s.state.Get(ctx, fmt.Sprintf("%s/%02x", KeyNodes, i))
			if err != nil {
				return nil, nil, err
			}
			if val != nil {
				var shard []string
				if err := json.Unmarshal(val, &shard); err != nil {
					return nil, nil, fmt.Errorf("node list is malformed: %w", err)
				}
				nodes = append(nodes, shard...)
			}
		}
	}
	now := s.cfg.Now()
	for _, n := range nodes {
		if ValidateName("node", n) != nil {
			continue
		}
		val, _, err := s.state.Get(ctx, KeyLeafPrefix+n)
		if err != nil {
			return nil, nil, err
		}
		if val == nil {
			continue // no leaf from this CA: nothing to wait for
		}
		var rec leafRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			return nil, nil, fmt.Errorf("leaf record of %q is malformed: %w", n, err)
		}
		switch {
		case rec.NotAfter.Before(now.Add(-s.cfg.LeafTTL)):
			if !live {
				gone = append(gone, n)
			}
		case rec.NotAfter.After(now) && rec.Root != to:
			pending = append(pending, n)
		}
	}
	slices.Sort(pending)
	slices.Sort(gone)
	return pending, gone, nil
}

// forgetNodes drops nodes whose last leaf expired a lifetime ago: first
// from the node list, then their records.
func (s *Server) forgetNodes(ctx context.Context, gone []string) error {
	for _, n := range gone {
		err := casLoop(ctx, s.state, nodesKey(n), func(old []byte) ([]byte, bool, error) {
			var nodes []string
			if old == nil {
				return nil, false, nil
			}
			if err := json.Unmarshal(old, &nodes); err != nil {
				return nil, false, fmt.Errorf("node list is malformed: %w", err)
			}
			i, found := slices.BinarySearch(nodes, n)
			if !found {
				return nil, false, nil
			}
			b, _ := json.Marshal(slices.Delete(nodes, i, i+1))
			return b, true, nil
		})
		if err != nil {
			return err
		}
		if err := s.state.Delete(ctx, KeyLeafPrefix+n); err != nil {
			return err
		}
	}
	return nil
}

// retire ends the rotation towards root to: the other roots and their keys
// leave the state, and the cross-signed intermediate leaves the chain.
func (s *Server) retire(ctx context.Context, to string) error {
	var retired []retiredRoot
	err := casLoop(ctx, s.state, KeyAuthority, func(old []byte) ([]byte, bool, error) {
		if old == nil {
			return nil, false, nil
		}
		st, err := decodeAuthorityState(old)
		if err != nil {
			return nil, false, err
		}
		if st.Rotation == nil || st.Rotation.To != to {
			return nil, false, nil // someone else finished it
		}
		now := s.cfg.Now()
		retired = nil
		keep := st.Roots[:0:0]
		for _, r := range st.Roots {
			c, err := x509.ParseCertificate(r.Cert)
			if err != nil {
				return nil, false, err
			}
			if Fingerprint(c) == to {
				keep = append(keep, r)
				continue
			}
			retired = append(retired, retiredRoot{Fingerprint: Fingerprint(c), NotAfter: c.NotAfter, RetiredAt: now})
		}
		if len(keep) != 1 {
			return nil, false, fmt.Errorf("CA state: new root %s not found", to)
		}
		st.Roots = keep
		st.Retired = append(st.Retired, retired...)
		st.Issuer.Chain = st.Issuer.Chain[:1]
		st.Rotation = nil
		b, err := json.Marshal(st)
		return b, true, err
	})
	if err != nil {
		return fmt.Errorf("retire old root: %w", err)
	}
	for _, r := range retired {
		s.log.Info("ca root retired", "root", r.Fingerprint, "active_root", to)
	}
	return nil
}

// renewIntermediate replaces the intermediate with fingerprint oldFP by a new
// one under the same root. Leaves under the old one keep verifying: they
// carry it in their chains, and the root does not change.
func (s *Server) renewIntermediate(ctx context.Context, oldFP string) error {
	err := casLoop(ctx, s.state, KeyAuthority, func(old []byte) ([]byte, bool, error) {
		if old == nil {
			return nil, false, nil
		}
		st, err := decodeAuthorityState(old)
		if err != nil {
			return nil, false, err
		}
		cur, err := x509.ParseCertificate(st.Issuer.Chain[0])
		if err != nil {
			return nil, false, err
		}
		if st.Rotation != nil || Fingerprint(cur) != oldFP {
			return nil, false, nil
		}
		root, rootKey, err := s.openRoot(st, st.Issuer.Root)
		if err != nil {
			return nil, false, err
		}
		if st.Issuer, err = s.newIssuer(st.Generation, root, rootKey, nil, nil, s.cfg.Now()); err != nil {
			return nil, false, err
		}
		b, err := json.Marshal(st)
		return b, true, err
	})
	if err != nil {
		return fmt.Errorf("renew intermediate: %w", err)
	}
	s.log.Info("ca intermediate renewed", "old", oldFP)
	return nil
}
