package observe

import (
	"encoding/binary"
	"testing"
)

func TestResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Call
		want Result
	}{
		{"http 200", Call{Protocol: HTTP, Status: 200, GRPCStatus: -1}, Success},
		{"http 404", Call{Protocol: HTTP, Status: 404, GRPCStatus: -1}, Success},
		{"http 503", Call{Protocol: HTTP, Status: 503, GRPCStatus: -1}, Failure},
		{"mesh error", Call{Protocol: HTTP, Status: 403, GRPCStatus: -1, MeshError: "denied"}, Failure},
		{"grpc ok", Call{Protocol: GRPC, Status: 200, GRPCStatus: 0}, Success},
		{"grpc not found", Call{Protocol: GRPC, Status: 200, GRPCStatus: 5}, Success},
		{"grpc unavailable", Call{Protocol: GRPC, Status: 200, GRPCStatus: 14}, Failure},
		{"grpc http 502", Call{Protocol: GRPC, Status: 502, GRPCStatus: -1}, Failure},
		{"tcp ok", Call{Protocol: TCP}, Success},
		{"tcp refused", Call{Protocol: TCP, MeshError: "connect_failed"}, Failure},
	} {
		if got := tc.c.Result(); got != tc.want {
			t.Errorf("%s: Result() = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestSampledRate(t *testing.T) {
	const n = 20000
	for _, rate := range []float64{0, 0.01, 0.25, 1} {
		got := 0
		var id [16]byte
		for i := range n {
			// A spread of low halves, as random trace IDs have.
			binary.BigEndian.PutUint64(id[8:], uint64(i)*0x9E3779B97F4A7C15)
			if Sampled(id, rate) {
				got++
			}
		}
		want := rate * n
		if d := float64(got) - want; d > 0.01*n || d < -0.01*n {
			t.Errorf("rate %v: %d of %d sampled, want about %.0f", rate, got, n, want)
		}
	}
}

type recorder struct{ begun, ended int }

func (r *recorder) Begin(*Call) { r.begun++ }
func (r *recorder) End(*Call)   { r.ended++ }

func TestObserversFanOut(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	os := Observers{a, b}
	c := &Call{}
	os.Begin(c)
	os.End(c)
	if a.begun != 1 || a.ended != 1 || b.begun != 1 || b.ended != 1 {
		t.Fatalf("fan-out: a=%+v b=%+v, want one Begin and one End each", a, b)
	}
}
