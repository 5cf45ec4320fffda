package raftstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/acl"
)

// ACLBootstrapResetFile, in a server's data directory, holds the reset
// index that lets `meshwork acl bootstrap` run once more (when the
// management token is lost): the index the refusal of a bootstrap names.
// Only the server's operator can write it, which is the point: the leader
// reads it when it proposes a bootstrap, whatever the request says. Delete
// it once the new bootstrap is done; the same index never serves twice.
const ACLBootstrapResetFile = "acl-bootstrap-reset"

// readACLResetIndex reads the reset file of dataDir: 0 when there is none.
func readACLResetIndex(dataDir string) (uint64, error) {
	path := filepath.Join(dataDir, ACLBootstrapResetFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: acl bootstrap: %v", ErrInvalid, err)
	}
	v := strings.TrimSpace(string(b))
	idx, err := strconv.ParseUint(v, 10, 64)
	if err != nil || idx == 0 {
		return 0, fmt.Errorf("%w: acl bootstrap: %s holds %q; want the reset index the refusal named, such as 42", ErrInvalid, path, v)
	}
	return idx, nil
}

// prepareACL gives a bootstrap that this leader proposes the reset index
// of its own reset file; the caller's value never counts. Other
// transactions pass unchanged.
func (s *server) prepareACL(txn Txn) (Txn, error) {
	for i, op := range txn {
		if op.Type != OpACLBootstrap || op.ACL == nil {
			continue
		}
		reset, err := readACLResetIndex(s.cfg.DataDir)
		if err != nil {
			return nil, err
		}
		a := *op.ACL
		a.ResetIndex = reset
		out := append(Txn(nil), txn...)
		out[i].ACL = &a
		return out, nil
	}
	return txn, nil
}

// bootstrapInitialManagement makes Config.ACLInitialManagement into the
// first management token, when no bootstrap has happened yet, as a new
// leader. It gives up when this server stops leading, or after a few
// failed attempts (the next leader tries again).
func (s *server) bootstrapInitialManagement(ctx context.Context) {
	secret := s.cfg.ACLInitialManagement
	if secret == "" {
		return
	}
	h := acl.HashSecret(secret)
	backoff := 500 * time.Millisecond
	for range 5 {
		if err := s.barrier(); err != nil {
			return // not the leader any more
		}
		st := s.fsm.state().acl.st
		if _, err := st.TokenBySecret(h); err == nil {
			return
		}
		if st.BootstrapIndex() != 0 {
			s.log.Info("acl initial management token not made: the ACL system was bootstrapped already", "bootstrap_index", st.BootstrapIndex())
			return
		}
		accessor, err := acl.NewID()
		if err != nil {
			return
		}
		t := &acl.Token{
			AccessorID:  accessor,
			SecretHash:  h,
			Description: "Initial management token (acl.tokens.initial_management)",
			Type:        acl.TypeManagement,
			CreateTime:  time.Now().UTC(),
		}
		_, err = s.apply(ctx, Txn{{Type: OpACLBootstrap, ACL: &ACLOp{Token: t}}})
		switch {
		case err == nil:
			s.log.Info("acl initial management token made", "accessor", accessor)
			return
		case errors.Is(err, acl.ErrBootstrapDone), errors.Is(err, acl.ErrConflict):
			s.log.Info("acl initial management token not made", "err", err)
			return
		}
		s.log.Warn("acl initial management token not made yet", "err", err)
		t2 := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t2.Stop()
			return
		case <-s.stop:
			t2.Stop()
			return
		case <-t2.C:
		}
		backoff *= 2
	}
}
