package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/transport"
	"github.com/meshwork/meshwork/transport/transporttest"
)

// agentConfig is what the parent hands an agent child, as JSON.
type agentConfig struct {
	Node            string                   `json:"node"`
	TrustDomain     string                   `json:"trust_domain"`
	Listen          string                   `json:"listen"` // UDP ip:port
	VIPRange        string                   `json:"vip_range"`
	DisableVIPs     bool                     `json:"disable_vips"`
	CertFile        string                   `json:"cert_file"`
	KeyFile         string                   `json:"key_file"`
	RootsFile       string                   `json:"roots_file"`
	Members         []catalog.Member         `json:"members"`
	Local           []transport.LocalService `json:"local"`
	CopyBuffer      int                      `json:"copy_buffer,omitempty"`
	MaxStreamWindow uint64                   `json:"max_stream_window,omitempty"`
	// Wait lists "service:port" VIP listeners to wait for before READY.
	Wait []string `json:"wait"`
}

// readyLine is the agent child's first line on stdout.
type readyLine struct {
	VIPs   map[string]string `json:"vips"` // "service:port" -> VIP ip:port
	GSO    bool              `json:"gso"`
	GRO    bool              `json:"gro"`
	RcvBuf int               `json:"rcvbuf"`
	SndBuf int               `json:"sndbuf"`
}

// runAgent runs one agent's data plane until stdin closes or a signal.
func runAgent(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var ac agentConfig
	if err := json.Unmarshal(raw, &ac); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	id, err := transporttest.LoadIdentity(ac.TrustDomain, ac.CertFile, ac.KeyFile, ac.RootsFile)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", ac.Listen)
	if err != nil {
		return err
	}
	defer pc.Close()
	store := catalog.NewStore()
	store.Publish(ac.Members)
	cfg := transport.Config{
		Node:         ac.Node,
		TrustDomain:  ac.TrustDomain,
		DisableVIPs:  ac.DisableVIPs,
		DefaultAllow: true,
		CopyBuffer:   ac.CopyBuffer,
	}
	if ac.MaxStreamWindow > 0 {
		cfg.MaxStreamWindow = ac.MaxStreamWindow
		cfg.MaxConnWindow = 4 * ac.MaxStreamWindow
	}
	if ac.VIPRange != "" {
		if cfg.VIPRange, err = netip.ParsePrefix(ac.VIPRange); err != nil {
			return err
		}
	}
	tr, err := transport.New(cfg, transport.Deps{
		PacketConn: pc,
		Identity:   id,
		Catalog:    store,
		Local:      transport.NewStaticLocal(ac.Local...),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("agent", ac.Node),
	})
	if err != nil {
		return err
	}
	// A signal or the end of stdin stops the agent. Stdin's end must not
	// call the NotifyContext's stop: that would restore SIGTERM's default
	// action and let the parent's SIGTERM kill the agent mid-shutdown.
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, stop := context.WithCancel(sigCtx)
	defer stop()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if err := tr.Start(ctx); err != nil {
		return err
	}
	defer tr.Close()
	rl := readyLine{VIPs: map[string]string{}}
	for _, l := range tr.Listeners() {
		rl.VIPs[fmt.Sprintf("%s:%d", l.Service, l.Port)] = l.Addr
	}
	for _, w := range ac.Wait {
		if _, ok := rl.VIPs[w]; !ok {
			return fmt.Errorf("no VIP listener for %s (have %v)", w, rl.VIPs)
		}
	}
	rl.RcvBuf, rl.SndBuf = tr.SocketBuffers()
	rl.GRO = tr.GRO()
	// GSO is known once a connection exists: report it on demand.
	line, _ := json.Marshal(rl)
	fmt.Println("READY " + string(line))
	// Commands on stdin: "gso" prints whether GSO is in use.
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "gso" {
				fmt.Printf("GSO %v\n", tr.GSO())
			}
		}
		stop()
	}()
	<-ctx.Done()
	start := time.Now()
	tr.Close()
	if el := time.Since(start); el > time.Second {
		fmt.Fprintf(os.Stderr, "transport Close took %s\n", el)
	}
	return nil
}

// runBackend serves the benchmark's local services until a signal:
// HTTP with a 1 KiB body on httpAddr, and a one-byte echo that closes on
// connAddr (for connection rate).
func runBackend(httpAddr, connAddr string) error {
	body := []byte(strings.Repeat("m", 1024))
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(hl)
	cl, err := net.Listen("tcp", connAddr)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [1]byte
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, b[:]); err == nil {
					c.Write(b[:])
				}
			}()
		}
	}()
	fmt.Println("READY")
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, stop := context.WithCancel(sigCtx)
	defer stop()
	go func() { io.Copy(io.Discard, os.Stdin); stop() }()
	<-ctx.Done()
	srv.Close()
	cl.Close()
	return nil
}
