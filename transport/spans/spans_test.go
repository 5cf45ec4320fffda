package spans

import (
	"testing"

	"github.com/meshwork/meshwork/transport/observe"
	"github.com/meshwork/meshwork/transport/wire"
)

func TestClientJoinsTheAppsTrace(t *testing.T) {
	app, err := wire.ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if err != nil {
		t.Fatal(err)
	}
	ids, w := Client(app, 0)
	if ids.TraceID != app.TraceID || ids.ParentID != app.ParentID || !ids.Sampled {
		t.Errorf("client span %+v does not continue the app's trace %+v", ids, app)
	}
	if ids.SpanID == app.ParentID || ids.SpanID == [8]byte{} {
		t.Errorf("client span ID %x: want a new, non-zero one", ids.SpanID)
	}
	if w.TraceID != ids.TraceID || w.ParentID != ids.SpanID || w.Flags != 1 {
		t.Errorf("wire context %+v does not name the client span %+v as parent", w, ids)
	}
	if err := w.Validate(); err != nil {
		t.Errorf("wire context invalid: %v", err)
	}
}

func TestClientStartsATrace(t *testing.T) {
	for _, tc := range []struct {
		rate    float64
		sampled bool
	}{{0, false}, {1, true}} {
		ids, w := Client(wire.TraceContext{}, tc.rate)
		if ids.TraceID == [16]byte{} || ids.ParentID != [8]byte{} || ids.Sampled != tc.sampled {
			t.Errorf("rate %v: new trace %+v: want a trace ID, no parent, sampled %v", tc.rate, ids, tc.sampled)
		}
		if got := w.Flags&1 == 1; got != tc.sampled {
			t.Errorf("rate %v: wire sampled flag %v, want %v", tc.rate, got, tc.sampled)
		}
	}
}

func TestServerIsAChildOfTheClient(t *testing.T) {
	client, w := Client(wire.TraceContext{}, 1)
	server := Server(w, 0)
	if server.TraceID != client.TraceID || server.ParentID != client.SpanID || !server.Sampled {
		t.Errorf("server span %+v is not a sampled child of client span %+v", server, client)
	}
	if server.SpanID == client.SpanID {
		t.Error("server span reuses the client's span ID")
	}
	tp := Traceparent(server)
	got, err := wire.ParseTraceparent(tp)
	if err != nil {
		t.Fatalf("traceparent %q: %v", tp, err)
	}
	if got.TraceID != server.TraceID || got.ParentID != server.SpanID || got.Flags != 1 {
		t.Errorf("traceparent %q does not name the server span %+v", tp, server)
	}
}

func TestServerWithoutContextStartsATrace(t *testing.T) {
	ids := Server(wire.TraceContext{}, 0)
	if ids.TraceID == [16]byte{} || ids.SpanID == [8]byte{} || ids.ParentID != [8]byte{} || ids.Sampled {
		t.Errorf("server span with no wire context: %+v", ids)
	}
}

func TestTraceparentFormat(t *testing.T) {
	ids := observe.TraceIDs{SpanID: [8]byte{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31}}
	ids.TraceID[0], ids.TraceID[15] = 0x0a, 0x9c
	want := "00-0a00000000000000000000000000009c-b7ad6b7169203331-00"
	if got := Traceparent(ids); got != want {
		t.Errorf("Traceparent = %q, want %q", got, want)
	}
}

func TestTraceparentAllocs(t *testing.T) {
	ids := Server(wire.TraceContext{}, 1)
	var buf [TraceparentLen]byte
	if n := testing.AllocsPerRun(100, func() { AppendTraceparent(buf[:0], ids) }); n != 0 {
		t.Errorf("AppendTraceparent allocates %v times", n)
	}
}
