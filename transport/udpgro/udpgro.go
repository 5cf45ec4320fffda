// Package udpgro gives quic-go the datagrams of a UDP socket with receive
// offload on.
//
// quic-go sends with segmentation offload (one sendmsg carries up to 64
// packets) but reads one packet per message. A socket with UDP_GRO set
// receives a run of same-sized datagrams from one sender as one message
// and the segment size beside it, so the kernel no longer splits each run
// into single packets on the way in; on loopback it splits nothing at all.
// Conn reads those runs in batches and hands them to quic-go packet by
// packet, through the batch-read interface that quic-go's socket code
// accepts from a PacketConn. It reads and sends with raw system calls
// (package rawio), which keep a slow call from moving the agent's work to
// another thread.
package udpgro

import "net"

// Wrap returns pc with receive offload on, and true, when pc is a UDP
// socket whose kernel supports UDP_GRO; otherwise pc itself and false.
// The returned conn does not own more than pc: closing either closes the
// socket.
func Wrap(pc net.PacketConn) (net.PacketConn, bool) { return wrap(pc) }
