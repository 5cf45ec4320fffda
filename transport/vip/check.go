package vip

import (
	"fmt"
	"net/netip"
)

// CheckPrefix checks that prefix can be a range of virtual IPs: IPv4,
// inside 127.0.0.0/8, outside 127.0.0.0/16, and holding at least 256
// addresses. Its error says what is wrong with the range and names no
// field: New wraps it in ErrPrefix, agent/config names tunnel.vip_range.
func CheckPrefix(prefix netip.Prefix) error {
	prefix = prefix.Masked()
	switch {
	case !prefix.IsValid() || !prefix.Addr().Is4():
		return fmt.Errorf("%s is not an IPv4 prefix", prefix)
	case prefix.Bits() < 8 || !loopback.Contains(prefix.Addr()):
		return fmt.Errorf("%s is not inside 127.0.0.0/8", prefix)
	case prefix.Overlaps(reserved):
		return fmt.Errorf("%s overlaps 127.0.0.0/16, where 127.0.0.1 lives", prefix)
	case prefix.Bits() > 24:
		return fmt.Errorf("%s holds fewer than 256 addresses (at most /24)", prefix)
	}
	return nil
}

// loopback is where Linux routes every address to the loopback interface.
var loopback = netip.MustParsePrefix("127.0.0.0/8")
