package httpjson

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		Port int    `json:"port"`
	}
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"good", `{"name":"web","port":80}`, ""},
		{"empty", ``, "body is empty"},
		{"unknown field", `{"nmae":"web"}`, `unknown field "nmae"`},
		{"wrong type", `{"port":"80"}`, `field "port"`},
		{"syntax", `{"name":`, "bad request body"},
		{"trailing", `{"name":"a"} {}`, "trailing data"},
		{"too large", `{"name":"` + strings.Repeat("a", MaxBody) + `"}`, "bad request body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("PUT", "/", strings.NewReader(tc.in))
			var b body
			err := Decode(r, &b)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadBody) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Decode error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestReadAnswer(t *testing.T) {
	var v struct{ A int }
	if err := ReadAnswer(strings.NewReader(`{"A":3}`), &v); err != nil || v.A != 3 {
		t.Fatalf("decode: %v, %+v", err, v)
	}
	var b strings.Builder
	if err := ReadAnswer(strings.NewReader("raw bytes"), &b); err != nil || b.String() != "raw bytes" {
		t.Fatalf("copy: %v, %q", err, b.String())
	}
	if err := ReadAnswer(strings.NewReader("ignored"), nil); err != nil {
		t.Fatalf("discard: %v", err)
	}
	if err := ReadAnswer(strings.NewReader("{"), &v); err == nil {
		t.Fatal("a truncated JSON answer was accepted")
	}
}
