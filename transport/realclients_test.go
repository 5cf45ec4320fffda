package transport

// Real clients through two agents: curl and Go's net/http over HTTP/1.1,
// h2load over h2c, grpc-go's interop client against its interop server,
// and a WebSocket echo (issue 25). Each test runs twice: with its service
// declared "tcp", carried per connection, and with the protocol its app
// speaks ("http", "http2" or "grpc") through Deps.Protocols, as
// ServiceDefaults declares it. While transport carries those per connection
// too, both runs take the L4 path; once a per-request handler is registered
// for them the second run covers it unchanged. The tools come from
// scripts/deps.sh test.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshwork/meshwork/internal/l7clients"
)

// realClientTimeout bounds each client run: a hung client fails its test
// instead of the package's -timeout.
const realClientTimeout = 30 * time.Second

// clientPath is how an application next to the calling agent reaches the
// service.
type clientPath int

const (
	viaVIP      clientPath = iota // the service's virtual IP on the calling agent
	viaUpstream                   // an explicit upstream of a local service
)

// eachProtocol runs body as a subtest per protocol of the service: "tcp",
// the per-connection path, and l7, the protocol the app speaks.
func eachProtocol(t *testing.T, l7 string, body func(t *testing.T, proto string)) {
	for _, proto := range []string{ProtocolTCP, l7} {
		t.Run(proto, func(t *testing.T) { body(t, proto) })
	}
}

// realClientMesh runs the application listening on 127.0.0.1:port as
// service, declared with protocol proto, behind agent "server", and returns
// the address an application next to agent "client" calls it on.
func realClientMesh(t *testing.T, service string, port int, proto string, via clientPath) string {
	t.Helper()
	m := newMesh(t)
	withProtocol := agentOpts{deps: func(d *Deps) { d.Protocols = protocols{service: proto} }}
	m.addAgent("server", []LocalService{{Name: service, Ports: []int{port}}}, withProtocol)
	switch via {
	case viaVIP:
		client := m.addAgent("client", nil, withProtocol)
		return client.vipAddr(t, service, port)
	default:
		bind := freeAddr(t)
		client := m.addAgent("client", []LocalService{{Name: "frontend", Upstreams: []Upstream{{Service: service, LocalBind: bind}}}}, withProtocol)
		eventually(t, "upstream listener of frontend", func() bool {
			for _, l := range client.tr.Listeners() {
				if l.Kind == "upstream" && l.Addr == bind {
					return true
				}
			}
			return false
		})
		return bind
	}
}

// serveApp serves h on 127.0.0.1 with srv's settings until the test ends
// and returns its port.
func serveApp(t *testing.T, srv *http.Server, h http.Handler) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Handler = h
	srv.ReadHeaderTimeout = realClientTimeout
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// webApp is the application of the curl and net/http tests, served over
// HTTP/1.1 or h2c. Every answer names the protocol the app was spoken to
// in X-App-Proto.
//
//	GET  /hello/{n}  "hello {n}\n"
//	POST /upload     "{length} {sha256}\n" of the request body
//	GET  /trailer    256 KiB, then the trailer X-Body-Sha256
func webApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{n}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.PathValue("n"))
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
	})
	mux.HandleFunc("GET /trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Body-Sha256")
		h := sha256.New()
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 1024)
		for range 16 {
			w.Write(chunk)
			h.Write(chunk)
		}
		w.Header().Set("X-Body-Sha256", hex.EncodeToString(h.Sum(nil)))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App-Proto", r.Proto)
		mux.ServeHTTP(w, r)
	})
}

// randomBytes returns n random bytes.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// uploadAnswer is what webApp answers to an upload of body.
func uploadAnswer(body []byte) string {
	return fmt.Sprintf("%d %x\n", len(body), sha256.Sum256(body))
}

func TestRealClientCurl(t *testing.T) {
	l7clients.Tool(t, l7clients.ToolCurl)
	eachProtocol(t, "http", testCurl)
}

func testCurl(t *testing.T, proto string) {
	port := serveApp(t, &http.Server{}, webApp())
	addr := realClientMesh(t, "web", port, proto, viaVIP)
	base := "http://" + addr
	curl := func(t *testing.T, args ...string) (string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), realClientTimeout)
		defer cancel()
		args = append([]string{"--silent", "--show-error", "--http1.1", "--max-time", "20"}, args...)
		out, errOut, err := l7clients.RunCurl(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out, errOut
	}
	// bodyFile writes size random bytes to a file for curl to upload.
	bodyFile := func(t *testing.T, size int) (string, []byte) {
		t.Helper()
		body := randomBytes(t, size)
		file := filepath.Join(t.TempDir(), "body")
		if err := os.WriteFile(file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		return file, body
	}

	t.Run("KeepAliveTwoURLs", func(t *testing.T) {
		// One invocation, two URLs: curl reuses its connection to the
		// listener for the second, and %{num_connects} says so.
		out, _ := curl(t, "--write-out", "connects=%{num_connects} code=%{http_code} proto=%header{x-app-proto}\n",
			base+"/hello/1", base+"/hello/2")
		want := "hello 1\nconnects=1 code=200 proto=HTTP/1.1\n" +
			"hello 2\nconnects=0 code=200 proto=HTTP/1.1\n"
		if out != want {
			t.Errorf("curl answered\n%s\nwant\n%s", out, want)
		}
	})

	t.Run("ChunkedUpload", func(t *testing.T) {
		file, body := bodyFile(t, 300<<10)
		out, errOut := curl(t, "--verbose", "--header", "Transfer-Encoding: chunked", "--data-binary", "@"+file, base+"/upload")
		if !strings.Contains(errOut, "> Transfer-Encoding: chunked") {
			t.Fatalf("curl did not send a chunked body:\n%s", errOut)
		}
		if want := uploadAnswer(body); out != want {
			t.Errorf("app answered %q, want %q", out, want)
		}
	})

	t.Run("Expect100Continue", func(t *testing.T) {
		file, body := bodyFile(t, 1<<20)
		// curl waits for 100 Continue up to --expect100-timeout, then sends
		// the body anyway: the 100 in its trace shows it was answered.
		out, errOut := curl(t, "--verbose", "--header", "Expect: 100-continue", "--expect100-timeout", "10",
			"--data-binary", "@"+file, base+"/upload")
		if !strings.Contains(errOut, "> Expect: 100-continue") {
			t.Fatalf("curl did not send Expect: 100-continue:\n%s", errOut)
		}
		if !strings.Contains(errOut, "< HTTP/1.1 100 Continue") {
			t.Errorf("no 100 Continue reached curl:\n%s", errOut)
		}
		if want := uploadAnswer(body); out != want {
			t.Errorf("app answered %q, want %q", out, want)
		}
	})
}

// TestRealClientGoHTTP is Go's client and server over HTTP/1.1.
func TestRealClientGoHTTP(t *testing.T) {
	eachProtocol(t, "http", func(t *testing.T, proto string) { testGoHTTP(t, proto, false) })
}

// TestRealClientGoH2C is Go's client and server over HTTP/2 with prior
// knowledge: h2load counts answers, this checks their bytes.
func TestRealClientGoH2C(t *testing.T) {
	eachProtocol(t, "http2", func(t *testing.T, proto string) { testGoHTTP(t, proto, true) })
}

// testGoHTTP runs Go's client against webApp behind the mesh, both
// speaking HTTP/1.1 only, or with h2c HTTP/2 with prior knowledge only.
func testGoHTTP(t *testing.T, proto string, h2c bool) {
	var protos http.Protocols
	wantProto := "HTTP/1.1"
	if h2c {
		protos.SetUnencryptedHTTP2(true)
		wantProto = "HTTP/2.0"
	} else {
		protos.SetHTTP1(true)
	}
	port := serveApp(t, &http.Server{Protocols: &protos}, webApp())
	addr := realClientMesh(t, "web", port, proto, viaUpstream)
	base := "http://" + addr
	tr := &http.Transport{Protocols: &protos, MaxIdleConnsPerHost: 1, ResponseHeaderTimeout: realClientTimeout}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: realClientTimeout}

	// upload posts body to /upload and checks the app's answer.
	upload := func(t *testing.T, ctx context.Context, body io.Reader, length int64, want string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/upload", body)
		req.ContentLength = length
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want || resp.Header.Get("X-App-Proto") != wantProto {
			t.Errorf("app answered %s %.80q (spoken to in %s), want %q", resp.Status, b, resp.Header.Get("X-App-Proto"), want)
		}
	}

	t.Run("KeepAlive", func(t *testing.T) {
		for i := range 5 {
			var reused bool
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", fmt.Sprintf("%s/hello/%d", base, i), nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != fmt.Sprintf("hello %d\n", i) || resp.Header.Get("X-App-Proto") != wantProto {
				t.Fatalf("request %d: %s %q (app spoken to in %s), %v", i, resp.Status, b, resp.Header.Get("X-App-Proto"), err)
			}
			if i > 0 && !reused {
				t.Errorf("request %d opened a new connection; keep-alive should reuse the first", i)
			}
		}
	})

	t.Run("KnownLengthUpload", func(t *testing.T) {
		// Larger than a per-request proxy keeps to replay a request.
		body := randomBytes(t, 1<<20)
		upload(t, t.Context(), bytes.NewReader(body), int64(len(body)), uploadAnswer(body))
	})

	t.Run("StreamedUpload", func(t *testing.T) {
		body := randomBytes(t, 256<<10)
		pr, pw := io.Pipe()
		go func() { // written in pieces, so the body's length is unknown until its end
			for chunk := range slicesOf(body, 4<<10) {
				if _, err := pw.Write(chunk); err != nil {
					return
				}
			}
			pw.Close()
		}()
		var chunked bool
		trace := &httptrace.ClientTrace{WroteHeaderField: func(k string, v []string) {
			if strings.EqualFold(k, "Transfer-Encoding") && len(v) == 1 && v[0] == "chunked" {
				chunked = true
			}
		}}
		upload(t, httptrace.WithClientTrace(t.Context(), trace), pr, -1, uploadAnswer(body))
		if !h2c && !chunked {
			t.Error("the client did not send Transfer-Encoding: chunked")
		}
	})

	t.Run("ResponseTrailers", func(t *testing.T) {
		resp, err := hc.Get(base + "/trailer")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if n != 256<<10 {
			t.Errorf("body of %d bytes, want %d", n, 256<<10)
		}
		if got, want := resp.Trailer.Get("X-Body-Sha256"), hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("trailer X-Body-Sha256 = %q, want %q (trailers %v)", got, want, resp.Trailer)
		}
	})
}

// slicesOf yields b in pieces of at most n bytes.
func slicesOf(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

func TestRealClientH2load(t *testing.T) {
	l7clients.Tool(t, l7clients.ToolH2load)
	eachProtocol(t, "http2", testH2load)
}

func testH2load(t *testing.T, proto string) {
	// The app speaks HTTP/2 with prior knowledge only, as an "http2"
	// service's app does: an HTTP/1.1 request would not reach the handler.
	var h2Requests atomic.Int64
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	port := serveApp(t, &http.Server{Protocols: &protos}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2Requests.Add(1)
		}
		io.WriteString(w, "ok\n")
	}))
	addr := realClientMesh(t, "api", port, proto, viaVIP)

	const requests = 2000
	ctx, cancel := context.WithTimeout(t.Context(), realClientTimeout)
	defer cancel()
	sum, out, err := l7clients.RunH2load(ctx, "-n", strconv.Itoa(requests), "-c", "4", "-m", "16",
		"--connection-inactivity-timeout=20", "http://"+addr+"/")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if sum.Protocol != "h2c" {
		t.Errorf("h2load spoke %q, want h2c", sum.Protocol)
	}
	if sum.Succeeded != requests || sum.Failed != 0 || sum.Errored != 0 || sum.Timeout != 0 || sum.Status2xx != requests {
		t.Errorf("h2load: %+v, want %d succeeded with 2xx\n%s", sum, requests, out)
	}
	if n := h2Requests.Load(); n != requests {
		t.Errorf("the app served %d HTTP/2 requests, want %d", n, requests)
	}
}

func TestRealClientInterop(t *testing.T) {
	l7clients.Tool(t, l7clients.ToolInteropClient)
	srv := l7clients.StartInteropServer(t)
	eachProtocol(t, "grpc", func(t *testing.T, proto string) {
		addr := realClientMesh(t, "interop", srv.Port, proto, viaUpstream)
		host, portStr, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(portStr)
		// Each case is one client process and its own connection.
		// timeout_on_sleeping_server alone would also pass against a
		// server it cannot reach, as its 1 ms deadline may run out while
		// it connects; the cases before it show the path works.
		for _, tc := range l7clients.InteropCases {
			t.Run(tc, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), realClientTimeout)
				defer cancel()
				if out, err := l7clients.RunInteropCase(ctx, host, port, tc); err != nil {
					t.Errorf("%v\nclient:\n%s\nserver (tail):\n%s", err, out, srv.Log())
				}
			})
		}
	})
}

// TestRealClientWebSocket: an Upgrade is carried per connection whatever
// the service's protocol.
func TestRealClientWebSocket(t *testing.T) { eachProtocol(t, "http", testWebSocket) }

func testWebSocket(t *testing.T, proto string) {
	var echo l7clients.WebSocketEcho
	mux := http.NewServeMux()
	mux.Handle("/echo", echo.Handler())
	port := serveApp(t, &http.Server{}, mux)
	addr := realClientMesh(t, "chat", port, proto, viaVIP)

	var msgs []l7clients.WSMessage
	for i := range 8 {
		m := l7clients.WSMessage{Binary: i%2 == 1, Data: fmt.Appendf(nil, "message %d", i)}
		if i == 5 {
			m.Data = randomBytes(t, 64<<10) // larger than one read
		}
		msgs = append(msgs, m)
	}
	ctx, cancel := context.WithTimeout(t.Context(), realClientTimeout)
	defer cancel()
	got, err := l7clients.WebSocketRoundTrip(ctx, "ws://"+addr+"/echo", "http://"+addr, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d echoes, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		if !got[i].Equal(msgs[i]) {
			t.Errorf("echo %d = %v, want %v", i, got[i], msgs[i])
		}
	}
	if n := echo.Received(); n != int64(len(msgs)) {
		t.Errorf("the app received %d messages, want %d", n, len(msgs))
	}
}
