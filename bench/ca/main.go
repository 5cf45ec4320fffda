// Command ca benchmarks certificate issuance on a server agent: the embedded
// smallstep authority of the mesh CA, measured side by side with a real
// step-ca (the comparison peer, same smallstep code as a standalone server)
// and with bare x509.CreateCertificate (the floor: one ECDSA P-256
// signature, nothing else).
//
//	go run ./bench/ca [-duration 3s] [-workers 1,8,32] [-stepca=true]
//
// Phases, each run for -duration at every concurrency of -workers:
//
//   - x509: CreateCertificate of a P-256 leaf by a P-256 intermediate.
//   - mesh-renew: Server.Renew in process, the steady-state path: verify the
//     presented chain, sign through authority.SignWithContext with the mesh's
//     options, record the leaf in the state store (MemStore here; with Raft
//     it is one replicated write per leaf).
//   - mesh-token: Server.SignWithToken in process, the bootstrap path: verify
//     the JWK token, consume it in the replicated ledger, sign, record.
//   - mesh-rpc: the renew RPC over HTTPS on loopback with mutual TLS and
//     kept-alive connections (one per worker), client and server on this
//     machine.
//   - stepca-renew, stepca-sign: step-ca's /1.0/renew (mTLS) and /1.0/sign
//     (a fresh JWK token per certificate) over HTTPS on loopback, kept-alive
//     connections, through smallstep's ca client.
//
// CSRs and tokens are made before each phase: the figures are the CA's.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/ca"
	"github.com/meshwork/meshwork/ca/stepcatest"
	"github.com/meshwork/meshwork/internal/spiffeid"
	"github.com/smallstep/certificates/api"
	stepca "github.com/smallstep/certificates/ca"
)

var (
	duration   = flag.Duration("duration", 3*time.Second, "length of each phase at each concurrency")
	workersArg = flag.String("workers", "1,8,32", "concurrencies to run each phase at")
	withStep   = flag.Bool("stepca", true, "also measure a real step-ca (needs scripts/deps.sh step)")
	phasesArg  = flag.String("phases", "x509,mesh-renew,mesh-token,mesh-rpc,stepca-renew,stepca-sign", "phases to run")
)

const td = "bench.mesh"

func main() {
	flag.Parse()
	log.SetFlags(0)
	var workers []int
	for _, s := range strings.Split(*workersArg, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("-workers %q: want a list of positive integers", *workersArg)
		}
		workers = append(workers, n)
	}
	phases := strings.Split(*phasesArg, ",")
	fmt.Printf("# CA issuance benchmark: %s, GOMAXPROCS=%d, %d CPUs, %s per run, ECDSA P-256 everywhere\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), *duration)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("# load average before: %s", b)
	}

	env := newMeshEnv()
	defer env.close()
	var sca *stepEnv
	if *withStep && (slices.Contains(phases, "stepca-renew") || slices.Contains(phases, "stepca-sign")) {
		var err error
		if sca, err = newStepEnv(); err != nil {
			log.Printf("# step-ca phases skipped: %v", err)
		} else {
			defer sca.close()
		}
	}

	fmt.Println()
	fmt.Println("| phase | workers | certs/s | p50 | p90 | p99 | errors | CA CPU per cert | certs/s per CA core |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, ph := range phases {
		for _, w := range workers {
			var op func(worker int) (func() error, error)
			switch ph {
			case "x509":
				op = env.x509Op
			case "mesh-renew":
				op = env.renewOp
			case "mesh-token":
				op = env.tokenOp
			case "mesh-rpc":
				op = env.rpcOp
			case "stepca-renew":
				if sca == nil {
					continue
				}
				op = sca.renewOp
			case "stepca-sign":
				if sca == nil {
					continue
				}
				op = sca.signOp
			default:
				log.Fatalf("unknown phase %q", ph)
			}
			env.workers = w
			if sca != nil {
				sca.workers = w
			}
			// CPU time of the CA: this process for the in-process and RPC
			// phases (the RPC phase includes its clients), step-ca's own
			// process for the step-ca phases. Unlike wall-clock rates it
			// does not depend on what else the machine runs.
			cpu := selfCPU
			if strings.HasPrefix(ph, "stepca") {
				cpu = func() time.Duration { return procCPU(sca.sca.PID()) }
			}
			ops := make([]func() error, w)
			for i := range w {
				o, err := op(i)
				if err != nil {
					log.Fatalf("%s: prepare: %v", ph, err)
				}
				ops[i] = o
			}
			c0 := cpu()
			r := run(*duration, ops)
			used := cpu() - c0
			per := time.Duration(0)
			if r.count > 0 {
				per = used / time.Duration(r.count)
			}
			perCore := 0.0
			if per > 0 {
				perCore = float64(time.Second) / float64(per)
			}
			fmt.Printf("| %s | %d | %.0f | %s | %s | %s | %d | %s | %.0f |\n", ph, w, r.rate, ms(r.p50), ms(r.p90), ms(r.p99), r.errors, ms(per), perCore)
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("\n# load average after: %s", b)
	}
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time process pid used so far, from /proc (clock ticks
// of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// errExhausted ends a worker whose one-time tokens are all used.
var errExhausted = errors.New("out of tokens")

// tokenBudget is how many one-time tokens a phase of w workers gets, in
// all: more than any run on this class of machine uses, minted up front.
func tokenBudget(w, perSecond int) int {
	return max(1, min(40000, perSecond*int(duration.Seconds()+1))/w)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

type result struct {
	count         int
	rate          float64
	p50, p90, p99 time.Duration
	errors        int64
}

// run calls each worker's operation in a loop for d (and at most 2 million
// calls in all) and returns the rate and latency percentiles.
func run(d time.Duration, ops []func() error) result {
	w := len(ops)
	var (
		mu    sync.Mutex
		lats  []time.Duration
		errs  atomic.Int64
		count atomic.Int64
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	start := time.Now()
	deadline := start.Add(d)
	for i := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) && count.Add(1) <= 2_000_000 {
				t0 := time.Now()
				err := ops[i]()
				if errors.Is(err, errExhausted) {
					break
				}
				if err != nil {
					if errs.Add(1) == 1 {
						first.Store(&err)
					}
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if e := first.Load(); e != nil {
		log.Printf("# first error: %v", *e)
	}
	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[min(len(lats)-1, int(float64(len(lats))*p))]
	}
	return result{count: len(lats), rate: float64(len(lats)) / el.Seconds(), p50: pct(0.50), p90: pct(0.90), p99: pct(0.99), errors: errs.Load()}
}

// meshEnv is one embedded CA on a MemStore, its RPC port on loopback, and a
// pool of agent identities.
type meshEnv struct {
	st   *ca.MemStore
	srv  *ca.Server
	self *ca.Manager
	rpc  string
	hs   *http.Server

	workers int // of the phase being prepared

	interCert *x509.Certificate
	interKey  *ecdsa.PrivateKey

	mu     sync.Mutex
	agents map[int]*agent
}

type agent struct {
	node  string
	csr   *x509.CertificateRequest
	pem   string
	chain []*x509.Certificate
	cert  tls.Certificate
}

func newMeshEnv() *meshEnv {
	key := make([]byte, ca.StateKeySize)
	if _, err := rand.Read(key); err != nil {
		log.Fatal(err)
	}
	e := &meshEnv{st: ca.NewMemStore(), agents: map[int]*agent{}}
	var err error
	e.srv, err = ca.NewServer(ca.ServerConfig{TrustDomain: td, Node: "srv1", StateKey: key}, ca.ServerDeps{State: e.st})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.srv.Start(ctx); err != nil {
		log.Fatal(err)
	}
	if err := e.srv.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	e.self, err = ca.NewManager(ca.ManagerConfig{TrustDomain: td, Node: "srv1"}, ca.ManagerDeps{Issuer: e.srv.LocalIssuer(), Bundles: ca.NewStateBundleSource(e.st, td)})
	if err != nil {
		log.Fatal(err)
	}
	if err := e.self.Start(ctx); err != nil {
		log.Fatal(err)
	}
	if err := e.self.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	e.hs = &http.Server{Handler: e.srv.RPCHandler(), ErrorLog: log.New(io.Discard, "", 0)}
	tl := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: e.self.GetCertificate, ClientAuth: tls.RequestClientCert})
	go func() { _ = e.hs.Serve(tl) }()
	e.rpc = ln.Addr().String()

	// A private intermediate for the x509 floor, like the CA's.
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "floor"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, rt, rt, rk.Public(), rk)
	e.interCert, _ = x509.ParseCertificate(der)
	e.interKey = rk
	return e
}

func (e *meshEnv) close() {
	e.hs.Close()
	e.self.Close()
	e.srv.Close()
}

// agentFor returns worker i's identity: a key, a CSR and a first leaf.
func (e *meshEnv) agentFor(i int) (*agent, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.agents[i]; ok {
		return a, nil
	}
	node := fmt.Sprintf("node-%d", i)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, err := ca.NewIdentity(td, node, []string{"web", "api"})
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: spiffeid.Node(td, node)}, URIs: id.URIs()}, key)
	if err != nil {
		return nil, err
	}
	csr, _ := x509.ParseCertificateRequest(der)
	tok, _, err := e.srv.Token(context.Background(), node, 0)
	if err != nil {
		return nil, err
	}
	is, err := e.srv.SignWithToken(context.Background(), tok, csr, "")
	if err != nil {
		return nil, err
	}
	a := &agent{node: node, csr: csr, chain: is.Chain, pem: string(pemCSR(der))}
	for _, c := range is.Chain {
		a.cert.Certificate = append(a.cert.Certificate, c.Raw)
	}
	a.cert.PrivateKey, a.cert.Leaf = key, is.Chain[0]
	e.agents[i] = a
	return a, nil
}

func (e *meshEnv) x509Op(int) (func() error, error) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://" + td + "/node/x")
	return func() error {
		sn, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		t := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: u.String()}, URIs: []*url.URL{u},
			NotBefore: time.Now(), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		_, err := x509.CreateCertificate(rand.Reader, t, e.interCert, key.Public(), e.interKey)
		return err
	}, nil
}

func (e *meshEnv) renewOp(i int) (func() error, error) {
	a, err := e.agentFor(i)
	if err != nil {
		return nil, err
	}
	return func() error {
		_, err := e.srv.Renew(context.Background(), a.chain, a.csr, "")
		return err
	}, nil
}

func (e *meshEnv) tokenOp(i int) (func() error, error) {
	a, err := e.agentFor(i)
	if err != nil {
		return nil, err
	}
	// Tokens are one-time: make them up front.
	toks := make([]string, tokenBudget(e.workers, 5000))
	for j := range toks {
		if toks[j], _, err = e.srv.Token(context.Background(), a.node, 0); err != nil {
			return nil, err
		}
	}
	var next atomic.Int64
	return func() error {
		j := int(next.Add(1)) - 1
		if j >= len(toks) {
			return errExhausted
		}
		_, err := e.srv.SignWithToken(context.Background(), toks[j], a.csr, "")
		return err
	}, nil
}

func (e *meshEnv) rpcOp(i int) (func() error, error) {
	a, err := e.agentFor(i)
	if err != nil {
		return nil, err
	}
	pool := e.srv.Bundle().Pool()
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{a.cert}, ServerName: "srv1",
		InsecureSkipVerify: true, //nolint:gosec // verified below against the mesh bundle
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, r := range raw[1:] {
				c, _ := x509.ParseCertificate(r)
				inter.AddCert(c)
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}, MaxIdleConnsPerHost: 1}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body, _ := json.Marshal(ca.SignRequest{CSR: a.pem})
	return func() error {
		resp, err := hc.Post("https://"+e.rpc+ca.RPCPathRenew, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var sr ca.SignResponse
		if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil {
			return err
		}
		if resp.StatusCode != 200 || sr.Chain == "" {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}, nil
}

func pemCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// stepEnv is a real step-ca on loopback with a client and its provisioner.
type stepEnv struct {
	workers int // of the phase being prepared
	sca     *stepcatest.CA
	dir     string
	prov    *stepca.Provisioner
}

func newStepEnv() (*stepEnv, error) {
	dir, err := os.MkdirTemp("", "meshwork-bench-stepca-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sca, err := stepcatest.Start(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pw, _ := os.ReadFile(sca.PasswordFile)
	prov, err := stepca.NewProvisioner(sca.Provisioner, "", sca.URL, bytes.TrimSpace(pw), stepca.WithRootSHA256(sca.Fingerprint))
	if err != nil {
		sca.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	return &stepEnv{sca: sca, dir: dir, prov: prov}, nil
}

func (s *stepEnv) close() {
	s.sca.Close()
	os.RemoveAll(s.dir)
}

// csrFor makes a CSR for worker i with the SANs a token for it will carry.
func stepCSR(i int) (*x509.CertificateRequest, *ecdsa.PrivateKey, []string, error) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, err := ca.NewIdentity(td, fmt.Sprintf("node-%d", i), []string{"web", "api"})
	if err != nil {
		return nil, nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: spiffeid.Node(td, id.Node)}, URIs: id.URIs()}, key)
	if err != nil {
		return nil, nil, nil, err
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr, key, id.IDs(), nil
}

func (s *stepEnv) signOp(i int) (func() error, error) {
	csr, _, sans, err := stepCSR(i)
	if err != nil {
		return nil, err
	}
	toks := make([]string, tokenBudget(s.workers, 1000))
	for j := range toks {
		if toks[j], err = s.prov.Token(sans[0], sans...); err != nil {
			return nil, err
		}
	}
	var next atomic.Int64
	cl, err := stepca.NewClient(s.sca.URL, stepca.WithRootSHA256(s.sca.Fingerprint))
	if err != nil {
		return nil, err
	}
	return func() error {
		j := int(next.Add(1)) - 1
		if j >= len(toks) {
			return errExhausted
		}
		_, err := cl.Sign(&api.SignRequest{CsrPEM: api.NewCertificateRequest(csr), OTT: toks[j]})
		return err
	}, nil
}

func (s *stepEnv) renewOp(i int) (func() error, error) {
	csr, key, sans, err := stepCSR(1000 + i)
	if err != nil {
		return nil, err
	}
	tok, err := s.prov.Token(sans[0], sans...)
	if err != nil {
		return nil, err
	}
	cl, err := stepca.NewClient(s.sca.URL, stepca.WithRootSHA256(s.sca.Fingerprint))
	if err != nil {
		return nil, err
	}
	resp, err := cl.Sign(&api.SignRequest{CsrPEM: api.NewCertificateRequest(csr), OTT: tok})
	if err != nil {
		return nil, err
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: resp.ServerPEM.Certificate}
	for _, c := range resp.CertChainPEM {
		cert.Certificate = append(cert.Certificate, c.Certificate.Raw)
	}
	roots, err := cl.Roots()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots.Certificates {
		pool.AddCert(r.Certificate)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, MaxIdleConnsPerHost: 1}
	return func() error {
		_, err := cl.Renew(tr)
		return err
	}, nil
}
