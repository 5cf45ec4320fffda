package l7clients

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"golang.org/x/net/websocket"
)

// WSMessage is one WebSocket message and its frame kind.
type WSMessage struct {
	// Binary is a binary frame; otherwise a text frame.
	Binary bool
	// Data is the payload.
	Data []byte
}

// String shows the kind, the length and at most 32 bytes of the payload.
func (m WSMessage) String() string {
	head := m.Data[:min(len(m.Data), 32)]
	if m.Binary {
		return fmt.Sprintf("binary(%d) %x", len(m.Data), head)
	}
	return fmt.Sprintf("text(%d) %q", len(m.Data), head)
}

// Equal says whether m and o have the same kind and payload.
func (m WSMessage) Equal(o WSMessage) bool {
	return m.Binary == o.Binary && string(m.Data) == string(o.Data)
}

// errNotWSMessage is a programming error: the codec carries *WSMessage only.
var errNotWSMessage = errors.New("l7clients: websocket codec carries WSMessage only")

// wsCodec sends and receives whole frames keeping their kind, which
// websocket.Message decides by the Go type instead.
var wsCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		m, ok := v.(WSMessage)
		if !ok {
			return nil, websocket.UnknownFrame, errNotWSMessage
		}
		if m.Binary {
			return m.Data, websocket.BinaryFrame, nil
		}
		return m.Data, websocket.TextFrame, nil
	},
	Unmarshal: func(data []byte, payloadType byte, v any) error {
		m, ok := v.(*WSMessage)
		if !ok {
			return errNotWSMessage
		}
		*m = WSMessage{Binary: payloadType == websocket.BinaryFrame, Data: data}
		return nil
	},
}

// WebSocketEcho is a WebSocket server that sends each message back as it
// came, frame kind and all, until the client closes.
type WebSocketEcho struct {
	received atomic.Int64
}

// Handler serves the echo; mount it on any path of an HTTP/1.1 server. It
// accepts any Origin: the clients are tests.
func (e *WebSocketEcho) Handler() http.Handler {
	return websocket.Server{
		Handshake: func(*websocket.Config, *http.Request) error { return nil },
		Handler: func(ws *websocket.Conn) {
			defer ws.Close()
			for {
				var m WSMessage
				if err := wsCodec.Receive(ws, &m); err != nil {
					return // the client closed, or broke the protocol
				}
				e.received.Add(1)
				if err := wsCodec.Send(ws, m); err != nil {
					return
				}
			}
		},
	}
}

// Received counts the messages the server has read, on every connection.
func (e *WebSocketEcho) Received() int64 { return e.received.Load() }

// WebSocketRoundTrip opens a WebSocket to url (ws://host:port/path), sends
// msgs while it reads their echoes concurrently, and returns what came
// back, in order. ctx bounds the whole exchange.
func WebSocketRoundTrip(ctx context.Context, url, origin string, msgs []WSMessage) ([]WSMessage, error) {
	cfg, err := websocket.NewConfig(url, origin)
	if err != nil {
		return nil, fmt.Errorf("l7clients: websocket %s: %w", url, err)
	}
	ws, err := cfg.DialContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("l7clients: websocket dial %s: %w", url, err)
	}
	defer ws.Close()
	if d, ok := ctx.Deadline(); ok {
		ws.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()

	sent := make(chan error, 1)
	go func() {
		for i, m := range msgs {
			if err := wsCodec.Send(ws, m); err != nil {
				sent <- fmt.Errorf("l7clients: websocket %s: send message %d: %w", url, i, err)
				return
			}
		}
		sent <- nil
	}()
	got := make([]WSMessage, 0, len(msgs))
	for i := range msgs {
		var m WSMessage
		if err := wsCodec.Receive(ws, &m); err != nil {
			ws.Close()
			<-sent
			return got, fmt.Errorf("l7clients: websocket %s: receive message %d: %w", url, i, err)
		}
		got = append(got, m)
	}
	return got, <-sent
}
