package gossip

// The peers file: the members this node has seen, remembered across
// restarts, so that it can rejoin through them when every RetryJoin address
// is down, and so that a restarted server finds the clients it served.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/internal/atomicfile"
)

// Peers file errors.
var (
	// ErrPeersFile wraps every error reading or writing PeersFile.
	ErrPeersFile = errors.New("peers file")
	// ErrForeignPeersFile wraps, besides ErrPeersFile, the error for a
	// peers file of another format or written by another node (a data dir
	// copied from another host).
	ErrForeignPeersFile = errors.New("not this node's peers file")
)

// peersFileFormat names the format and its version in every peers file.
const peersFileFormat = "meshwork-gossip-peers/1"

// maxRememberedPeers bounds the peers file. Rejoining needs one live
// member; 64, servers first, leave room for many of them to be gone.
const maxRememberedPeers = 64

// maxPeersFileSize is the largest peers file read: 64 entries take about
// 16 KB with the longest names.
const maxPeersFileSize = 64 << 10

// RememberedPeer is one member in the peers file.
type RememberedPeer struct {
	Name string `json:"name"`
	// Addr and Port are its gossip address.
	Addr   string `json:"addr"`
	Port   int    `json:"port"`
	Server bool   `json:"server,omitempty"`
	// Status is what this node last knew: alive, failed or left.
	Status catalog.MemberStatus `json:"status"`
	// Since is, for a member alive, when the file was written; for one
	// failed or left, when it went away. Its reconnect window counts from
	// then, so that restarts do not extend it.
	Since time.Time `json:"since"`
}

type peersFileDoc struct {
	Format string           `json:"format"`
	Node   string           `json:"node"`
	Peers  []RememberedPeer `json:"peers"`
}

// ReadPeersFile reads the peers file at path, which must have been written
// by the node called node. Every error wraps ErrPeersFile and says what was
// wrong; a missing file also wraps os.ErrNotExist.
func ReadPeersFile(path, node string) ([]RememberedPeer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPeersFile, path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPeersFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPeersFile, path, err)
	}
	if len(b) > maxPeersFileSize {
		return nil, fmt.Errorf("%w %s: larger than %d bytes", ErrPeersFile, path, maxPeersFileSize)
	}
	ps, err := parsePeersFile(b, node)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrPeersFile, path, err)
	}
	return ps, nil
}

// parsePeersFile decodes and checks a peers file of node. Its errors say
// what was wrong and where.
func parsePeersFile(b []byte, node string) ([]RememberedPeer, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var doc peersFileDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a peers file: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("not a peers file: data after the document")
	}
	if doc.Format != peersFileFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrForeignPeersFile, doc.Format, peersFileFormat)
	}
	if doc.Node != node {
		return nil, fmt.Errorf("%w: written by node %q, not %q (a data dir copied from another host?)", ErrForeignPeersFile, doc.Node, node)
	}
	if len(doc.Peers) > maxRememberedPeers {
		return nil, fmt.Errorf("%d peers, over the limit of %d", len(doc.Peers), maxRememberedPeers)
	}
	seen := make(map[string]bool, len(doc.Peers))
	for i, p := range doc.Peers {
		if err := checkName("name", p.Name); err != nil {
			return nil, fmt.Errorf("peers[%d]: %v", i, err)
		}
		if p.Name == node {
			return nil, fmt.Errorf("peers[%d]: %q is this node", i, p.Name)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("peers[%d]: %q is listed twice", i, p.Name)
		}
		seen[p.Name] = true
		if net.ParseIP(p.Addr) == nil {
			return nil, fmt.Errorf("peers[%d] %q: addr %q is not an IP address", i, p.Name, p.Addr)
		}
		if p.Port < 1 || p.Port > 65535 {
			return nil, fmt.Errorf("peers[%d] %q: port %d is out of range 1-65535", i, p.Name, p.Port)
		}
		switch p.Status {
		case catalog.StatusAlive, catalog.StatusFailed, catalog.StatusLeft:
		default:
			return nil, fmt.Errorf("peers[%d] %q: status %q is not alive, failed or left", i, p.Name, p.Status)
		}
		if p.Since.IsZero() {
			return nil, fmt.Errorf("peers[%d] %q: since is missing", i, p.Name)
		}
	}
	return doc.Peers, nil
}

// encodePeersFile is the peers file of node listing ps.
func encodePeersFile(node string, ps []RememberedPeer) []byte {
	if ps == nil {
		ps = []RememberedPeer{}
	}
	b, _ := json.MarshalIndent(peersFileDoc{Format: peersFileFormat, Node: node, Peers: ps}, "", "  ")
	return append(b, '\n')
}

// peersSignature identifies the membership a list of remembered peers
// describes, leaving out the times of live members (which change at every
// write): the file is rewritten only when it changes.
func peersSignature(ps []RememberedPeer) string {
	sorted := append([]RememberedPeer(nil), ps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var sb strings.Builder
	for _, p := range sorted {
		fmt.Fprintf(&sb, "%s %s %d %t %s", p.Name, p.Addr, p.Port, p.Server, p.Status)
		if p.Status != catalog.StatusAlive {
			fmt.Fprintf(&sb, " %d", p.Since.UnixNano())
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// remember seeds the table with peers read from the peers file, as
// reconnect candidates. A peer that was alive when the file was written
// counts as gone since now (this node cannot tell when it stopped seeing
// it); one that had failed or left keeps the time it went away.
func (t *peerTable) remember(rs []RememberedPeer, now time.Time) {
	for _, r := range rs {
		if r.Name == t.self {
			continue
		}
		if p := t.peers[r.Name]; p != nil && p.known {
			continue
		}
		p := t.add(r.Name)
		p.remembered = true
		p.node = memberlist.Node{Name: r.Name, Addr: net.ParseIP(r.Addr), Port: uint16(r.Port)}
		p.rememberedServer = r.Server
		p.rememberedLeft = r.Status == catalog.StatusLeft
		p.deadAt = r.Since
		if r.Status == catalog.StatusAlive || r.Since.After(now) {
			p.deadAt = now
		}
	}
}

// rememberable returns what the peers file should hold: live members, and
// the others still within their reconnect window; servers first, then live
// members, then the most recently gone; at most limit.
func (t *peerTable) rememberable(now time.Time, limit int) []RememberedPeer {
	var out []RememberedPeer
	for _, p := range t.peers {
		if p.node.Addr == nil {
			continue
		}
		r := RememberedPeer{Name: p.name, Addr: p.node.Addr.String(), Port: int(p.node.Port), Server: p.server()}
		switch {
		case p.known && p.alive:
			r.Status, r.Since = catalog.StatusAlive, now
			if p.status(now) == catalog.StatusLeft {
				r.Status = catalog.StatusLeft // leaving
			}
		case t.reconnectable(p, now):
			r.Status, r.Since = catalog.StatusFailed, p.deadAt
			if p.left(now) {
				r.Status = catalog.StatusLeft
			}
		default:
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Server != b.Server {
			return a.Server
		}
		if (a.Status == catalog.StatusAlive) != (b.Status == catalog.StatusAlive) {
			return a.Status == catalog.StatusAlive
		}
		if !a.Since.Equal(b.Since) {
			return a.Since.After(b.Since)
		}
		return a.Name < b.Name
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// loadPeersFile seeds the peer table from PeersFile. A missing file is the
// first start; a file that cannot be used is reported and ignored: it is
// rewritten from the membership this node sees, and RetryJoin still works.
func (g *Gossip) loadPeersFile() {
	path := g.cfg.PeersFile
	if path == "" {
		return
	}
	ps, err := ReadPeersFile(path, g.cfg.NodeName)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		g.metrics.peersFile.WithLabelValues("read", "error").Inc()
		g.log.Warn("gossip peers file ignored", "file", path, "err", err,
			"hint", "it is rewritten from the membership this node sees; retry_join still works")
		return
	}
	g.metrics.peersFile.WithLabelValues("read", "ok").Inc()
	now := g.clock.Now()
	g.mu.Lock()
	g.peers.remember(ps, now)
	g.mu.Unlock()
	g.log.Info("gossip remembers peers", "file", path, "peers", len(ps))
}

// peersFileInterval is the shortest time between two writes of the peers
// file: 10 gossip intervals (1 s by default), so that a join storm costs a
// handful of writes and fsyncs, and a crash loses at most that much.
func (g *Gossip) peersFileInterval() time.Duration { return 10 * g.cfg.GossipInterval }

// peersFileLoop writes the peers file when membership changes, at most once
// per peersFileInterval.
func (g *Gossip) peersFileLoop() {
	defer g.wg.Done()
	for {
		g.writePeersFile()
		if !g.sleep(g.peersFileInterval()) {
			return
		}
		select {
		case <-g.peersKick:
		case <-g.ctx.Done():
			return
		}
	}
}

// writePeersFile writes the peers file if the membership it describes
// changed since the last write.
func (g *Gossip) writePeersFile() {
	path := g.cfg.PeersFile
	if path == "" {
		return
	}
	g.peersFileMu.Lock()
	defer g.peersFileMu.Unlock()
	now := g.clock.Now()
	g.mu.Lock()
	ps := g.peers.rememberable(now, maxRememberedPeers)
	g.mu.Unlock()
	sig := peersSignature(ps)
	if sig == g.lastPeers {
		return
	}
	if err := atomicfile.Write(path, encodePeersFile(g.cfg.NodeName, ps), 0o600); err != nil {
		g.metrics.peersFile.WithLabelValues("write", "error").Inc()
		msg := err.Error()
		if msg != g.lastPeersErr {
			g.lastPeersErr = msg
			g.log.Warn("gossip peers file not written", "file", path, "err", fmt.Errorf("%w %s: %w", ErrPeersFile, path, err))
		}
		return
	}
	g.metrics.peersFile.WithLabelValues("write", "ok").Inc()
	g.lastPeers, g.lastPeersErr = sig, ""
}
