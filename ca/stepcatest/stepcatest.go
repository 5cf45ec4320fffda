// Package stepcatest runs a real step-ca on loopback for tests and
// benchmarks: `step ca init` non-interactively into a directory, then
// step-ca, stopped by its PID. The binaries come from scripts/deps.sh step
// (PATH, or $(go env GOPATH)/bin).
package stepcatest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshwork/meshwork/internal/freeport"
)

// ErrNoBinaries means step or step-ca is not installed.
var ErrNoBinaries = errors.New("stepcatest: step and step-ca not found (install them with scripts/deps.sh step)")

// ProvisionerName is the JWK provisioner `step ca init` creates.
const ProvisionerName = "mesh"

// CA is a running step-ca.
type CA struct {
	// URL is https://127.0.0.1:<port>.
	URL string
	// Fingerprint is the SHA-256 of the root, in hex.
	Fingerprint string
	// Provisioner is the JWK provisioner's name.
	Provisioner string
	// PasswordFile holds the password of the keys and the provisioner.
	PasswordFile string
	// Dir is the CA's STEPPATH; Log is step-ca's output.
	Dir, Log string

	cmd  *exec.Cmd
	done chan struct{}
}

// Binaries returns the paths of step-ca and step.
func Binaries() (stepCA, step string, err error) {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	if gp, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, p := range filepath.SplitList(strings.TrimSpace(string(gp))) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	find := func(name string) string {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
		return ""
	}
	stepCA, step = find("step-ca"), find("step")
	if stepCA == "" || step == "" {
		return "", "", ErrNoBinaries
	}
	return stepCA, step, nil
}

// Start initialises a CA in dir and starts step-ca on a free loopback port.
// It returns once the CA answers /health. Close stops it.
func Start(ctx context.Context, dir string) (*CA, error) {
	stepCA, step, err := Binaries()
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 24)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(hex.EncodeToString(pw)+"\n"), 0o600); err != nil {
		return nil, err
	}
	port, err := freeport.TCP("127.0.0.1")
	if err != nil {
		return nil, err
	}
	stepPath := filepath.Join(dir, "step")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	init := exec.CommandContext(ctx, step, "ca", "init",
		"--deployment-type=standalone", "--name=meshwork-test", "--dns=127.0.0.1", "--address="+addr,
		"--provisioner="+ProvisionerName, "--password-file="+pwFile, "--provisioner-password-file="+pwFile)
	init.Env = append(os.Environ(), "STEPPATH="+stepPath, "HOME="+dir)
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("stepcatest: step ca init: %v: %s", err, out)
	}
	rootPEM, err := os.ReadFile(filepath.Join(stepPath, "certs", "root_ca.crt"))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(rootPEM)
	if blk == nil {
		return nil, fmt.Errorf("stepcatest: root_ca.crt is not PEM")
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(root.Raw)

	logPath := filepath.Join(dir, "step-ca.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(stepCA, "--password-file="+pwFile, filepath.Join(stepPath, "config", "ca.json"))
	cmd.Env = append(os.Environ(), "STEPPATH="+stepPath, "HOME="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("stepcatest: start step-ca: %w", err)
	}
	ca := &CA{
		URL: "https://" + addr, Fingerprint: hex.EncodeToString(sum[:]), Provisioner: ProvisionerName,
		PasswordFile: pwFile, Dir: stepPath, Log: logPath, cmd: cmd, done: make(chan struct{}),
	}
	go func() { _ = cmd.Wait(); logf.Close(); close(ca.done) }()
	if err := ca.waitHealthy(ctx, root); err != nil {
		ca.Close()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; step-ca said: %s", err, tail(out, 2000))
	}
	return ca, nil
}

func (c *CA) waitHealthy(ctx context.Context, root *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(c.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("stepcatest: step-ca exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling for readiness, with a deadline
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stepcatest: step-ca not healthy after 30s: %v", err)
		}
	}
}

// PID is step-ca's process ID.
func (c *CA) PID() int { return c.cmd.Process.Pid }

// Close kills step-ca by its PID and waits for it. It is idempotent.
func (c *CA) Close() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
