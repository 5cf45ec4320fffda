package gossip

// Joining: Join, the rejoin loop (RetryJoin and remembered peers, until this
// node is in contact with the cluster), and the reconnect loop (members that
// failed or left, and remembered peers, one at a time).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Join contacts addrs (host or host:port) and merges state with them. It
// returns the number of addresses that answered. An error wraps
// ErrKeyMismatch when the agents answered but do not share this node's
// gossip key, else ErrJoin. Either way the log says what happened.
func (g *Gossip) Join(addrs []string) (int, error) {
	ml := g.ml.Load()
	if ml == nil {
		return 0, fmt.Errorf("gossip: join: %w", ErrNotStarted)
	}
	norm := make([]string, 0, len(addrs))
	for _, a := range addrs {
		n, err := joinAddr(a)
		if err != nil {
			return 0, fmt.Errorf("gossip: join: %w: address %q: %v", ErrJoin, a, err)
		}
		norm = append(norm, n)
	}
	n, err := ml.Join(norm)
	if err == nil {
		g.log.Info("gossip joined the cluster", "contacted", n, "addrs", norm)
		g.announceSelf()
		return n, nil
	}
	err = g.joinError(norm, err)
	g.logJoinError(slog.LevelWarn, norm, err)
	return 0, err
}

// joinError classifies a failed join of addrs.
func (g *Gossip) joinError(addrs []string, err error) error {
	if isKeyMismatch(err.Error()) {
		return fmt.Errorf("gossip: join %v: %w: %v", addrs, ErrKeyMismatch, err)
	}
	return fmt.Errorf("gossip: join %v: %w: %v", addrs, ErrJoin, err)
}

// logJoinError says what a failed join means, in plain words. A key
// mismatch is always an error; a node that did not answer is logged at
// level.
func (g *Gossip) logJoinError(level slog.Level, addrs []string, err error) {
	if errors.Is(err, ErrKeyMismatch) {
		g.log.Error("gossip join refused: this node's gossip encryption key does not match the cluster's",
			"addrs", addrs, "err", err.Error(),
			"hint", "give this agent the cluster's keyring (see `meshwork keyring list` on a member)")
		return
	}
	g.log.Log(context.Background(), level, "gossip join failed",
		"addrs", addrs, "err", err.Error(),
		"hint", "check that the agents run and are reachable on the gossip port (UDP and TCP); if they are, the gossip encryption key may not match")
}

// announceSelf gossips this node's record to the cluster it just joined:
// the push/pull of the join gave it only to the contacted members.
func (g *Gossip) announceSelf() {
	g.mu.Lock()
	self := g.localWireLocked()
	g.mu.Unlock()
	g.disseminate(self, "")
}

// maxRejoinPeers bounds the remembered peers and gone members one rejoin
// attempt tries, besides every RetryJoin address: enough that a few gone for
// good do not hide the live ones, few enough that a node rejoining a large
// cluster does not exchange full state with dozens of members at once.
const maxRejoinPeers = 8

// maxParallelJoins bounds the joins in flight at once. Each takes up to
// TCPTimeout when its target's host is down, so they run side by side.
const maxParallelJoins = 8

// rejoinLoop joins the cluster at start, and again whenever this node loses
// contact with it (see peerTable.inContact: no live peer, or no live server
// when it knows servers). Each attempt tries every RetryJoin address and up
// to maxRejoinPeers reconnect candidates (members that failed or left, and
// peers remembered from the peers file) at once; attempts back off, with
// jitter, from RetryJoinInterval to RetryJoinMax until contact is made.
// While in contact it waits for membership to change.
func (g *Gossip) rejoinLoop() {
	defer g.wg.Done()
	wait := g.cfg.RetryJoinInterval
	attempt := 0
	for {
		now := g.clock.Now()
		g.mu.Lock()
		leaving := g.local.leaving
		contact := g.peers.inContact(now)
		var targets []string
		if !contact && !leaving {
			targets = g.rejoinTargetsLocked(now)
		}
		g.mu.Unlock()
		if leaving {
			return // a node that leaves does not come back by itself
		}
		g.metrics.inContact.Set(b2f(contact))
		if contact || len(targets) == 0 {
			if contact && attempt > 0 {
				g.log.Info("gossip in contact with the cluster", "attempts", attempt)
			}
			if contact {
				attempt, wait = 0, g.cfg.RetryJoinInterval
			}
			// Nothing to do, or nobody to try (the first node of a cluster,
			// say): wait until membership changes, and look at most once per
			// gossip interval (every record change kicks).
			select {
			case <-g.contactKick:
			case <-g.ctx.Done():
				return
			}
			if !g.sleep(g.cfg.GossipInterval) {
				return
			}
			continue
		}
		attempt++
		contacted, firstErr := g.joinEach(targets, "rejoin")
		// Attempts 1, 2, 4, 8… are logged at Warn, the others at Debug: an
		// outage of every server is visible without a line every few
		// seconds.
		level := slog.LevelDebug
		if bits.OnesCount(uint(attempt)) == 1 {
			level = slog.LevelWarn
		}
		if contacted > 0 {
			g.log.Info("gossip rejoined", "contacted", contacted, "tried", len(targets), "attempt", attempt)
			g.announceSelf()
			// Contact is judged on the membership the joins brought. A join
			// that answered without bringing contact (other clients while
			// every server is down) still waits its turn: an address that
			// always answers must not make this loop spin.
			g.mu.Lock()
			contact = g.peers.inContact(g.clock.Now())
			g.mu.Unlock()
			if contact {
				continue
			}
		} else if firstErr != nil {
			g.logJoinError(level, targets, firstErr)
		}
		d := jitter(wait)
		g.log.Log(context.Background(), level, "gossip will retry joining", "attempt", attempt, "in", d)
		if !g.sleep(d) {
			return
		}
		wait = min(wait*2, g.cfg.RetryJoinMax)
	}
}

// rejoinTargetsLocked returns what one rejoin attempt tries: every RetryJoin
// address, then up to maxRejoinPeers reconnect candidates picked at random.
func (g *Gossip) rejoinTargetsLocked(now time.Time) []string {
	targets := make([]string, 0, len(g.cfg.RetryJoin)+maxRejoinPeers)
	seen := make(map[string]bool)
	for _, a := range g.cfg.RetryJoin {
		n, err := joinAddr(a) // validated by New
		if err == nil && !seen[n] {
			seen[n] = true
			targets = append(targets, n)
		}
	}
	cands := g.peers.reconnectCandidates(now)
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	added := 0
	for _, c := range cands {
		if added == maxRejoinPeers {
			break
		}
		hp := net.JoinHostPort(c.Addr.String(), strconv.Itoa(int(c.Port)))
		if seen[hp] {
			continue
		}
		seen[hp] = true
		targets = append(targets, nodeJoinAddr(c))
		added++
	}
	return targets
}

// nodeJoinAddr is the join address of a known node, "name/host:port", so
// that memberlist's transport knows whom it dials.
func nodeJoinAddr(n memberlist.Node) string {
	return n.Name + "/" + net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// joinEach joins every address on its own, up to maxParallelJoins at a
// time, so that one silent host does not hold up the others. It returns how
// many answered and the first error, classified by joinError.
func (g *Gossip) joinEach(addrs []string, loop string) (int, error) {
	ml := g.ml.Load()
	var (
		mu        sync.Mutex
		contacted int
		firstErr  error
		wg        sync.WaitGroup
	)
	sem := make(chan struct{}, maxParallelJoins)
	for _, a := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := ml.Join([]string{a})
			result := "ok"
			if err != nil {
				result = "error"
			}
			g.metrics.joins.WithLabelValues(loop, result).Inc()
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				contacted++
			} else if firstErr == nil || (isKeyMismatch(err.Error()) && !errors.Is(firstErr, ErrKeyMismatch)) {
				// A key mismatch says more than a silent host.
				firstErr = g.joinError([]string{a}, err)
			}
		}()
	}
	wg.Wait()
	return contacted, firstErr
}

// reconnectLoop tries, every ReconnectInterval (stretched in large
// clusters, with jitter), to join one member that failed or left and is
// still within its reconnect window, or one remembered peer not seen yet:
// so that the two sides of a healed partition merge, and a member that
// restarted, even after a graceful leave, is found again although
// memberlist itself never contacts a node it declared dead or gone.
func (g *Gossip) reconnectLoop() {
	defer g.wg.Done()
	for g.sleep(jitter(g.reconnectInterval())) {
		now := g.clock.Now()
		g.mu.Lock()
		leaving := g.local.leaving
		cands := g.peers.reconnectCandidates(now)
		g.mu.Unlock()
		if leaving {
			return
		}
		if len(cands) == 0 {
			continue
		}
		n := cands[rand.IntN(len(cands))]
		if _, err := g.ml.Load().Join([]string{nodeJoinAddr(n)}); err != nil {
			g.metrics.joins.WithLabelValues("reconnect", "error").Inc()
			g.log.Debug("gossip reconnect failed", "node", n.Name, "err", err)
			continue
		}
		g.metrics.joins.WithLabelValues("reconnect", "ok").Inc()
		g.log.Info("gossip reconnected to member", "node", n.Name)
		g.announceSelf()
	}
}

// reconnectInterval is ReconnectInterval at up to 32 members and longer
// above, as memberlist stretches push/pull: each node tries one candidate
// per interval, so without it a large cluster would dial a gone member
// hundreds of times a second; at 300 members each node tries every 5
// intervals, and the cluster still finds a returning member within a
// fraction of one.
func (g *Gossip) reconnectInterval() time.Duration {
	return scaleInterval(g.cfg.ReconnectInterval, int(g.peers.numAlive.Load())+1)
}

func scaleInterval(d time.Duration, members int) time.Duration {
	const threshold = 32
	if members <= threshold {
		return d
	}
	mult := math.Ceil(math.Log2(float64(members))-math.Log2(threshold)) + 1
	return time.Duration(mult) * d
}

// jitter spreads d over [0.75d, 1.25d), so that nodes restarted together
// do not retry in step.
func jitter(d time.Duration) time.Duration {
	if d < 4 {
		return d
	}
	return d - d/4 + rand.N(d/2)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
