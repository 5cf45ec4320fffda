package acl

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRequirement(t *testing.T) {
	web := compile("t1", []*Policy{{Name: "p", Rules: Rules{Service: map[string]Access{"web": Write}, Agent: Read}}}, DefaultDeny)
	path := func(string) string { return "web" }
	tests := []struct {
		name    string
		need    Requirement
		valid   bool
		str     string
		allowed bool // for web
	}{
		{"fixed", Require(ResourceAgent, "", Read), true, "agent:read", true},
		{"fixed named", Require(ResourceOperator, OperatorRaft, Write), true, "operator:write on raft", false},
		{"path", RequireOnPath(ResourceService, "name", Write), true, "service:write on {name}", true},
		{"path without wildcard", RequireOnPath(ResourceService, "", Read), false, "", false},
		{"deny is no need", Require(ResourceService, "web", Deny), false, "", false},
		{"no resource", Require(0, "x", Read), false, "", false},
		{"handler", CheckedInHandler("service:write on the body's name"), true, "in handler: service:write on the body's name", true},
		{"handler without note", CheckedInHandler(""), false, "", true},
		{"any token", AnyToken("self"), true, "any token: self", true},
		{"open", Open("roots"), true, "open: roots", true},
		{"zero", Requirement{}, false, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.need.Validate()
			if (err == nil) != tc.valid {
				t.Fatalf("Validate = %v, want valid %v", err, tc.valid)
			}
			if !tc.valid {
				return
			}
			if got := tc.need.String(); got != tc.str {
				t.Errorf("String = %q, want %q", got, tc.str)
			}
			err = tc.need.Check(web, path)
			if (err == nil) != tc.allowed {
				t.Errorf("Check = %v, want allowed %v", err, tc.allowed)
			}
			if err != nil && !errors.Is(err, ErrPermissionDenied) {
				t.Errorf("Check error %v is not a denial", err)
			}
		})
	}
}

// TestContextFailsClosed: a handler reached without the middleware's
// context gets an authorizer that denies everything.
func TestContextFailsClosed(t *testing.T) {
	if err := FromContext(context.Background()).Check(ResourceService, "web", Read); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("no authorizer in the context: %v", err)
	}
	var denied []error
	ctx := NewContext(context.Background(), allowAll, func(err error) { denied = append(denied, err) })
	if FromContext(ctx) != AllowAll() {
		t.Fatal("the context lost its authorizer")
	}
	// WriteError answers refusals and tells the hook; other errors are left
	// to the caller.
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{&PermissionError{Permission: Permission{Resource: ResourceService, Name: "web", Access: Write}, AccessorID: "a"}, 403, CodePermissionDenied},
		{ErrTokenNotFound, 403, CodeTokenNotFound},
		{ErrTokenExpired, 403, CodeTokenNotFound},
		{ErrMalformedToken, 400, CodeMalformedToken},
	} {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		if !WriteError(rec, r, tc.err) {
			t.Fatalf("%v not answered", tc.err)
		}
		var body ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != tc.status || body.Code != tc.code || body.Error != tc.err.Error() {
			t.Fatalf("%v answered %d %s", tc.err, rec.Code, rec.Body)
		}
	}
	if got := (&PermissionError{Permission: Permission{Resource: ResourceService, Name: "web", Access: Write}}).Error(); got != `permission denied: token lacks service:write on "web"` {
		t.Fatalf("denial reads %q", got)
	}
	if len(denied) != 4 {
		t.Fatalf("the hook heard of %d refusals, want 4", len(denied))
	}
	if WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), errors.New("other")) {
		t.Fatal("WriteError answered an error that is not a refusal")
	}
}

func TestMountAllowAll(t *testing.T) {
	mux := http.NewServeMux()
	m := MountAllowAll(mux)
	if err := m("GET /x", Requirement{}, http.NotFoundHandler()); err == nil {
		t.Fatal("an incomplete requirement was mounted")
	}
	if err := m("GET /x", Require(ResourceACL, "", Write), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := FromContext(r.Context()).Check(ResourceACL, "", Write); err != nil {
			http.Error(w, err.Error(), 403)
		}
	})); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 200 {
		t.Fatalf("MountAllowAll refused: %d %s", rec.Code, rec.Body)
	}
}

// TestStateCloneAndTouch: a clone changes on its own, and Touch only moves
// the index forward.
func TestStateCloneAndTouch(t *testing.T) {
	s := NewState()
	p := &Policy{ID: "11111111-1111-4111-8111-111111111111", Name: "p", Rules: Rules{Agent: Read}}
	if _, err := s.SetPolicy(p, 0, 5); err != nil {
		t.Fatal(err)
	}
	c := s.Clone()
	if _, err := c.SetPolicy(&Policy{ID: "22222222-2222-4222-8222-222222222222", Name: "q"}, 0, 6); err != nil {
		t.Fatal(err)
	}
	if err := c.DeletePolicy(p.ID, 0, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Policy(p.ID); err != nil || len(s.Policies()) != 2 || s.Index() != 5 {
		t.Fatalf("the original changed with its clone: %v, %d policies, index %d", err, len(s.Policies()), s.Index())
	}
	if _, err := c.PolicyByName("p"); err == nil {
		t.Fatal("the clone kept a deleted policy's name")
	}
	if err := c.Touch(7); !errors.Is(err, ErrConflict) {
		t.Fatalf("Touch at the current index: %v", err)
	}
	if err := c.Touch(9); err != nil || c.Index() != 9 || len(c.Policies()) != 2 {
		t.Fatalf("Touch: %v, index %d", err, c.Index())
	}
	if !strings.Contains(Require(ResourceCA, CALeaf, Read).String(), "leaf") {
		t.Fatal("requirement string")
	}
}
