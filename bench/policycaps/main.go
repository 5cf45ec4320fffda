// Command policycaps measures what the policy costs each agent, to choose
// the caps on the number and the total size of policy documents
// (policy.MaxTotalDocuments, policy.MaxTotalBytes): the resident memory of
// a server agent (Raft, CA) and of a client agent (following the policy
// stream), the real binary on loopback, as the policy grows by steps.
//
// At each step it applies documents through the server's HTTP API, waits
// until the client agent enforces the new index, then rewrites a few
// documents one at a time (each change sends the whole set to every agent,
// as in daily use) and reads VmRSS and VmHWM from /proc.
//
//	go run ./bench/policycaps [-bin bin/meshwork] [-steps 0,1000,...] [-docs mix|large]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshwork/meshwork/bench/internal/agentproc"
)

var (
	binFlag = flag.String("bin", "bin/meshwork", "the meshwork binary, as make build makes it")
	steps   = flag.String("steps", "0,1000,2500,5000,7500,10000,12000", "numbers of documents to measure at")
	docs    = flag.String("docs", "mix", "documents: mix (four kinds, about 170 bytes of JSON each), sources5 (Intentions of 5 sources, about 400 bytes) or large (Intentions of 60 sources, about 4 KiB)")
	churn   = flag.Int("churn", 10, "documents rewritten one at a time at each step before measuring")
	settle  = flag.Duration("settle", 5*time.Second, "pause before reading /proc at each step, for the garbage collector's background work")
	warmup  = flag.Duration("warmup", 65*time.Second, "wait after start before the first step (past the agent's second release of its executable pages, 60s after start)")
)

const (
	serverIP = "127.78.0.1"
	clientIP = "127.78.0.2"
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/policycaps:", err)
		os.Exit(1)
	}
}

func run() error {
	var counts []int
	for _, s := range strings.Split(*steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || (len(counts) > 0 && n < counts[len(counts)-1]) {
			return fmt.Errorf("-steps %q: want increasing numbers", *steps)
		}
		counts = append(counts, n)
	}
	var gen func(i, version int) string
	batch := 500 // documents per apply, under the API's 1 MiB a request
	switch *docs {
	case "mix":
		gen = mixDoc
	case "sources5":
		gen = func(i, version int) string { return intention(i, version, 5) }
	case "large":
		gen, batch = func(i, version int) string { return intention(i, version, 60) }, 200
	default:
		return fmt.Errorf("-docs %q: want mix or large", *docs)
	}
	bin, err := filepath.Abs(*binFlag)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		return fmt.Errorf("%w (run make build first)", err)
	}
	dir, err := os.MkdirTemp("", "meshwork-bench-policycaps-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	key := func() (string, error) {
		out, err := exec.Command(bin, "keygen").Output()
		return strings.TrimSpace(string(out)), err
	}
	enc, err := key()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	ck, err := key()
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	common := func(node, ip string, vip int) string {
		return fmt.Sprintf("node: %s\ndata_dir: %s\nbind: %s\nadvertise: %s\naddresses: {http: %s, dns: %s}\n"+
			"encrypt: %q\ncluster_key: %q\nlog_level: warn\ntunnel: {vip_range: 127.%d.0.0/16}\n",
			node, filepath.Join(dir, node), ip, ip, ip, ip, enc, ck, vip)
	}
	server, err := agentproc.Start(bin, dir, "server", common("server", serverIP, 245)+"server: true\nbootstrap_expect: 1\n")
	if err != nil {
		return err
	}
	defer server.Stop()
	serverAPI := "http://" + serverIP + ":8500"
	clientAPI := "http://" + clientIP + ":8500"
	if err := agentproc.WaitFor(60*time.Second, "the server's CA", func() error {
		return exec.Command(bin, "ca", "roots", "--http-addr="+serverIP+":8500").Run()
	}); err != nil {
		return err
	}
	tok, err := exec.Command(bin, "ca", "token", "client", "--http-addr="+serverIP+":8500").Output()
	if err != nil {
		return fmt.Errorf("ca token: %w", err)
	}
	tokenFile := filepath.Join(dir, "client.token")
	if err := os.WriteFile(tokenFile, []byte(agentproc.LastLine(string(tok))), 0o600); err != nil {
		return err
	}
	client, err := agentproc.Start(bin, dir, "client", common("client", clientIP, 246)+
		fmt.Sprintf("retry_join: [%s]\nca: {token_file: %s}\n", serverIP, tokenFile))
	if err != nil {
		return err
	}
	defer client.Stop()
	if err := agentproc.WaitFor(60*time.Second, "the client's certificate", func() error {
		return exec.Command(bin, "ca", "cert", "--http-addr="+clientIP+":8500").Run()
	}); err != nil {
		return err
	}

	fmt.Printf("bench/policycaps: one server and one client agent on loopback; documents %q; %d rewritten at each step\n\n", *docs, *churn)
	time.Sleep(*warmup) // letting start-up allocations and page releases settle; not synchronisation
	fmt.Println("| documents | policy JSON | server RSS | server peak | client RSS | client peak |")
	fmt.Println("|---|---|---|---|---|---|")
	have := 0
	version := 0
	for _, n := range counts {
		var idx uint64
		for have < n {
			var b strings.Builder
			for i := have; i < min(have+batch, n); i++ {
				b.WriteString("---\n" + gen(i, 0))
			}
			if idx, err = apply(serverAPI, b.String()); errors.Is(err, errRefused) {
				fmt.Printf("\ndocuments %d to %d refused: %v\n", have, min(have+batch, n), err)
				return nil
			} else if err != nil {
				return fmt.Errorf("apply documents %d to %d: %w", have, min(have+batch, n), err)
			}
			have = min(have+batch, n)
		}
		for j := 0; j < *churn && have > 0; j++ {
			version++
			i := (version * 7919) % have
			if idx, err = apply(serverAPI, gen(i, version)); err != nil {
				return fmt.Errorf("rewrite document %d: %w", i, err)
			}
		}
		if err := agentproc.WaitFor(60*time.Second, "the client's policy", func() error {
			got, err := policyIndex(clientAPI)
			if err == nil && got < idx {
				err = fmt.Errorf("index %d, want %d", got, idx)
			}
			return err
		}); err != nil {
			return err
		}
		time.Sleep(*settle) // letting the collector finish its cycle; not synchronisation
		size, err := policySize(serverAPI)
		if err != nil {
			return err
		}
		row := []string{strconv.Itoa(n), mib(size)}
		for _, p := range []*agentproc.Proc{server, client} {
			rss, hwm, err := agentproc.Memory(p.Cmd.Process.Pid)
			if err != nil {
				return p.Exited()
			}
			row = append(row, mib(rss*1024), mib(hwm*1024))
		}
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
	return nil
}

// mixDoc is document i of a policy of four kinds in turn, as a mesh of
// services has them: protocol, intentions, resilience, a split. version
// changes a field, for rewrites.
func mixDoc(i, version int) string {
	name := fmt.Sprintf("service-%05d", i/4)
	switch i % 4 {
	case 0:
		protos := []string{"http", "grpc", "http2", "tcp"}
		return fmt.Sprintf("kind: ServiceDefaults\nname: %s\nprotocol: %s\n", name, protos[version%4])
	case 1:
		return fmt.Sprintf("kind: Intention\nname: %s\nsources:\n  - {name: frontend-%d, action: allow}\n  - {name: batch-%d, action: allow}\n  - {name: \"*\", action: deny}\n", name, version, i%97)
	case 2:
		return fmt.Sprintf("kind: Resilience\nname: %s\nretries: {attempts: 3, retry_on: [connect-failure, 5xx], per_try_timeout: %dms}\n"+
			"timeouts: {connect: 1s, request: 5s, idle: 5m}\ncircuit_breaker: {max_connections: 100, max_pending: 50, max_requests: 200}\n", name, 500+version)
	default:
		return fmt.Sprintf("kind: Split\nname: %s\nsplits:\n  - {weight: %d, subset: {tags: [v1]}}\n  - {weight: %d, subset: {meta: {version: \"2\"}}}\n", name, 90-version%10, 10+version%10)
	}
}

// intention is document i, an Intention of n named sources.
func intention(i, version, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kind: Intention\nname: service-%05d\nsources:\n", i)
	for s := 0; s < n; s++ {
		fmt.Fprintf(&b, "  - {name: caller-service-with-a-descriptive-name-%03d-%d, action: allow}\n", s, version)
	}
	return b.String()
}

// policySize is the total length of the documents' JSON, as the servers
// count it for the size cap: each document's flat JSON without its indexes.
func policySize(api string) (int64, error) {
	resp, err := http.Get(api + "/v1/policy")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var list struct {
		Documents []map[string]json.RawMessage `json:"documents"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return 0, fmt.Errorf("list the policy: %w", err)
	}
	var total int64
	for _, d := range list.Documents {
		delete(d, "create_index")
		delete(d, "modify_index")
		b, err := json.Marshal(d)
		if err != nil {
			return 0, err
		}
		total += int64(len(b))
	}
	return total, nil
}

// errRefused is a write the servers refused for a policy cap (HTTP 413).
var errRefused = errors.New("refused by a policy cap")

func apply(api, body string) (uint64, error) {
	req, err := http.NewRequest(http.MethodPut, api+"/v1/policy", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusRequestEntityTooLarge {
		return 0, fmt.Errorf("%w: %s: %s", errRefused, resp.Status, bytes.TrimSpace(b))
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	var out struct {
		Index uint64 `json:"index"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, err
	}
	return out.Index, nil
}

func policyIndex(api string) (uint64, error) {
	resp, err := http.Get(api + "/v1/policy/status")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Index uint64 `json:"index"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, err
	}
	return st.Index, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
