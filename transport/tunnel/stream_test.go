package tunnel

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/quic-go/quic-go"
)

// A stream of a closing connection can fail before the connection's
// context is cancelled; the error itself must then say the connection is
// gone, so that the call is retried on a fresh one.
func TestConnectionLevelErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("read status: %w", &quic.StatelessResetError{}), true},
		{&quic.IdleTimeoutError{}, true},
		{&quic.ApplicationError{ErrorCode: 1, Remote: true}, true},
		{&quic.TransportError{ErrorCode: quic.ProtocolViolation}, true},
		{&quic.StreamError{StreamID: 4, ErrorCode: 1, Remote: true}, false},
		{context.DeadlineExceeded, false},
		{io.EOF, false},
	} {
		if got := connectionLevel(tc.err); got != tc.want {
			t.Errorf("connectionLevel(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
