//go:build !linux

package sockdiag

import "net/netip"

// LookupTCP fails: sock_diag is Linux only.
func LookupTCP(local, remote netip.AddrPort) (Socket, error) { return Socket{}, ErrUnsupported }
