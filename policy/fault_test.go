package policy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const faultExample = `kind: Fault
name: api
abort:
  percent: 10
  http_status: 503
  grpc_status: 14
delay:
  percent: 0.5
  fixed: 200ms
match:
  headers:
    - {name: x-chaos, exact: "on"}
`

func TestParseFault(t *testing.T) {
	docs := mustParse(t, faultExample)
	f, ok := docs[0].Spec.(*Fault)
	if !ok || docs[0].Kind != KindFault || docs[0].Name != "api" {
		t.Fatalf("decoded %+v", docs[0])
	}
	if f.Abort.Percent != 10 || f.Abort.HTTPStatus != 503 || f.Abort.GRPCStatus != 14 {
		t.Errorf("abort decoded wrongly: %+v", f.Abort)
	}
	if f.Delay.Percent != 0.5 || f.Delay.Fixed.D() != 200*time.Millisecond {
		t.Errorf("delay decoded wrongly: %+v", f.Delay)
	}
	if want := []HeaderMatch{{Name: "x-chaos", Exact: "on"}}; !reflect.DeepEqual(f.Match.Headers, want) {
		t.Errorf("match decoded wrongly: %+v", f.Match)
	}
	if k, err := ParseKind("fault"); err != nil || k != KindFault {
		t.Errorf("ParseKind(fault) = %q, %v", k, err)
	}
}

func TestFaultStatusDefaults(t *testing.T) {
	tests := []struct {
		name       string
		abort      FaultAbort
		http, grpc int
	}{
		{"both", FaultAbort{HTTPStatus: 429, GRPCStatus: 8}, 429, 8},
		{"http only", FaultAbort{HTTPStatus: 500}, 500, DefaultFaultGRPCStatus},
		{"grpc only", FaultAbort{GRPCStatus: 4}, DefaultFaultHTTPStatus, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, g := tt.abort.Statuses()
			if h != tt.http || g != tt.grpc {
				t.Fatalf("Statuses() = %d, %d; want %d, %d", h, g, tt.http, tt.grpc)
			}
		})
	}
}

func TestParseFaultRefusesWithFieldPath(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"nothing", "kind: Fault\nname: api\n",
			`Fault "api": sets nothing: give abort, delay or both`},
		{"match only", "kind: Fault\nname: api\nmatch: {headers: [{name: a, exact: b}]}\n",
			`Fault "api": sets nothing`},
		{"percent above", "kind: Fault\nname: api\nabort: {percent: 100.5, http_status: 503}\n",
			`Fault "api": abort.percent: 100.5 must be between 0 and 100`},
		{"percent negative", "kind: Fault\nname: api\ndelay: {percent: -1, fixed: 1s}\n",
			`Fault "api": delay.percent: -1 must be between 0 and 100`},
		{"percent not a number", "kind: Fault\nname: api\nabort: {percent: ten, http_status: 503}\n",
			`Fault "api": abort.percent: want a number`},
		{"no status", "kind: Fault\nname: api\nabort: {percent: 10}\n",
			`Fault "api": abort: give http_status (400 to 599), grpc_status (1 to 16) or both`},
		{"http status low", "kind: Fault\nname: api\nabort: {percent: 10, http_status: 200}\n",
			`Fault "api": abort.http_status: 200 must be between 400 and 599`},
		{"http status high", "kind: Fault\nname: api\nabort: {percent: 10, http_status: 600}\n",
			`Fault "api": abort.http_status: 600 must be between 400 and 599`},
		{"grpc status OK", "kind: Fault\nname: api\nabort: {percent: 10, grpc_status: -1}\n",
			`Fault "api": abort.grpc_status: -1 must be between 1 and 16`},
		{"grpc status high", "kind: Fault\nname: api\nabort: {percent: 10, grpc_status: 17}\n",
			`Fault "api": abort.grpc_status: 17 must be between 1 and 16`},
		{"delay missing", "kind: Fault\nname: api\ndelay: {percent: 10}\n",
			`Fault "api": delay.fixed: required: a duration more than 0`},
		{"delay zero", "kind: Fault\nname: api\ndelay: {percent: 10, fixed: 0s}\n",
			`Fault "api": delay.fixed: required: a duration more than 0`},
		{"delay negative", "kind: Fault\nname: api\ndelay: {percent: 10, fixed: -5ms}\n",
			`Fault "api": delay.fixed: required: a duration more than 0`},
		{"delay too long", "kind: Fault\nname: api\ndelay: {percent: 10, fixed: 2h}\n",
			`Fault "api": delay.fixed: 2h0m0s is longer than 1h0m0s`},
		{"delay bare number", "kind: Fault\nname: api\ndelay: {percent: 10, fixed: 200}\n",
			`Fault "api": delay.fixed: int 200 must be a duration string such as "5s"`},
		{"match empty", "kind: Fault\nname: api\nabort: {percent: 1, http_status: 503}\nmatch: {}\n",
			`Fault "api": match.headers: at least one header is required`},
		{"match bad header", "kind: Fault\nname: api\nabort: {percent: 1, http_status: 503}\nmatch: {headers: [{name: 'a b', exact: x}]}\n",
			`Fault "api": match.headers[0].name: "a b" is not an HTTP header name`},
		{"match path", "kind: Fault\nname: api\nabort: {percent: 1, http_status: 503}\nmatch: {path_prefix: /}\n",
			`Fault "api": match.path_prefix: unknown key`},
		{"unknown key", "kind: Fault\nname: api\nabort: {percent: 1, http_status: 503, status: 500}\n",
			`Fault "api": abort.status: unknown key`},
		{"bad name", "kind: Fault\nname: a.b\nabort: {percent: 1, http_status: 503}\n",
			`Fault "a.b": name: "a.b" must be a service name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.src)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error\n %v\ndoes not contain\n %s", err, tt.want)
			}
		})
	}
}

func TestParseFaultNamesEveryBadField(t *testing.T) {
	src := "kind: Fault\nname: api\nabort: {percent: 101, http_status: 99, grpc_status: 0}\ndelay: {percent: -2, fixed: 0s}\nmatch: {headers: [{name: '', exact: x}]}\n"
	_, err := Parse([]byte(src))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, field := range []string{"abort.percent", "abort.http_status", "delay.percent", "delay.fixed", "match.headers[0].name"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

func TestFaultRoundTrip(t *testing.T) {
	docs := mustParse(t, faultExample+"---\nkind: Fault\nname: '*'\nabort: {percent: 0.1, grpc_status: 8}\n")
	y, err := EncodeYAML(docs)
	if err != nil {
		t.Fatal(err)
	}
	if again := mustParse(t, string(y)); !reflect.DeepEqual(docs, again) {
		t.Fatalf("YAML round trip differs:\n%s", y)
	}
	for _, d := range docs {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back Document
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, d) {
			t.Fatalf("JSON round trip differs: %s", b)
		}
		if got := mustParse(t, string(b)); !reflect.DeepEqual(got[0], d) {
			t.Fatalf("JSON form does not parse back: %s", b)
		}
	}
}

func TestFaultFor(t *testing.T) {
	docs := mustParse(t, faultExample+"---\nkind: Fault\nname: '*'\nabort: {percent: 1, http_status: 500}\n")
	entries := make([]Entry, len(docs))
	for i := range docs {
		entries[i] = Entry{Document: docs[i]}
	}
	set := NewSet(1, entries)
	if f := set.FaultFor("API"); f == nil || f.Abort.Percent != 10 {
		t.Errorf("FaultFor(API) = %+v, want the api document", f)
	}
	if f := set.FaultFor("web"); f == nil || f.Abort.HTTPStatus != 500 {
		t.Errorf("FaultFor(web) = %+v, want the \"*\" document", f)
	}
	if f := Empty().FaultFor("web"); f != nil {
		t.Errorf("FaultFor on an empty set = %+v, want nil", f)
	}
}

func TestFaultApplies(t *testing.T) {
	hdr := func(m map[string]string) func(string) (string, bool) {
		return func(name string) (string, bool) { v, ok := m[strings.ToLower(name)]; return v, ok }
	}
	matched := &Fault{Match: &FaultMatch{Headers: []HeaderMatch{{Name: "X-Chaos", Exact: "on"}, {Name: "x-team", Exact: "a"}}}}
	tests := []struct {
		name   string
		f      *Fault
		header func(string) (string, bool)
		want   bool
	}{
		{"no match, no headers", &Fault{}, nil, true},
		{"no match, headers", &Fault{}, hdr(map[string]string{"x": "y"}), true},
		{"all headers", matched, hdr(map[string]string{"x-chaos": "on", "x-team": "a"}), true},
		{"one missing", matched, hdr(map[string]string{"x-chaos": "on"}), false},
		{"wrong value", matched, hdr(map[string]string{"x-chaos": "On", "x-team": "a"}), false},
		{"no headers (tcp)", matched, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Applies(tt.header); got != tt.want {
				t.Fatalf("Applies = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFaultDecide(t *testing.T) {
	draws := 0
	at := func(v float64) func() float64 { return func() float64 { draws++; return v } }
	f := &Fault{Abort: &FaultAbort{Percent: 25, HTTPStatus: 503}, Delay: &FaultDelay{Percent: 100, Fixed: Duration(time.Second)}}
	if d := f.Decide(nil, at(0.2)); !d.Abort || d.Delay != time.Second || draws != 1 {
		t.Errorf("draw 0.2: %+v after %d draws; want abort, 1s delay, one draw (100 %% draws nothing)", d, draws)
	}
	if d := f.Decide(nil, at(0.25)); d.Abort {
		t.Errorf("draw 0.25 aborted at 25 %%: %+v", d)
	}
	var none *Fault
	if d := none.Decide(nil, at(0)); d != (FaultDecision{}) {
		t.Errorf("a nil Fault decided %+v", d)
	}
	zero := &Fault{Abort: &FaultAbort{Percent: 0, HTTPStatus: 503}}
	draws = 0
	if d := zero.Decide(nil, at(0)); d.Abort || draws != 0 {
		t.Errorf("0 %%: %+v after %d draws", d, draws)
	}
}
