package p2p

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
)

// A member of the mesh holds the mesh key, so the transport lets it in; what
// keeps one that spams gossip from costing the others their peer is here.
// Three layers, cheapest first:
//
//   - gossipRate: every RPC a peer sends is charged against its own budget
//     before pubsub looks at it; past the budget whole RPCs are dropped.
//   - topicFilter: subscriptions to topics the mesh does not use are
//     ignored, so a peer cannot grow the router's topic table at will.
//   - peer scoring: each invalid message (a bad signature, refused by a
//     validator) costs its sender score, squared; below the graylist
//     threshold pubsub ignores everything the peer sends.
//
// Each layer logs a peer once, when it starts refusing it.

// Gossip budgets per peer. A task's output is the largest honest burst: at
// 100 MB/s in 64 KiB chunks, 1,600 messages a second; the budget is three
// times that, and the burst holds a second of a full pipe.
const (
	gossipUnitsPerSecond = 5000
	gossipBurst          = 20000
	// maxGraylistedLogged bounds the graylisted peers remembered for the
	// log.
	maxGraylistedLogged = 4096
	// maxTopicsPerRPC bounds the subscriptions one RPC may carry.
	maxTopicsPerRPC = 64
)

// Score thresholds. An invalid message costs counter² (weight -1, decaying
// to a tenth in 20 s): an honest peer that relays a few stale messages
// stays near zero, a peer that sends 32 invalid ones in a burst is
// graylisted (-1000) and stays so until it stops for about half a minute.
var (
	gossipThresholds = &pubsub.PeerScoreThresholds{
		GossipThreshold:             -100,
		PublishThreshold:            -500,
		GraylistThreshold:           -1000,
		AcceptPXThreshold:           0,
		OpportunisticGraftThreshold: 0,
	}
	topicScore = &pubsub.TopicScoreParams{
		SkipAtomicValidation: true,
		TopicWeight:          1,
		// Time in the mesh is not scored (weight 0); pubsub divides by
		// the quantum regardless.
		TimeInMeshQuantum:              time.Second,
		InvalidMessageDeliveriesWeight: -1,
		InvalidMessageDeliveriesDecay:  0.9,
	}
)

// scoreParams are the mesh's peer-score parameters. Topics are scored as
// they are joined (Join sets topicScore): log topics come and go.
func scoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics:               map[string]*pubsub.TopicScoreParams{},
		// Peers of one machine or one LAN share an address: colocation
		// says nothing here, so it is not penalised.
		IPColocationFactorWeight: 0,
		// Gossip promises not kept (IWANT unanswered) cost a little past a
		// few.
		BehaviourPenaltyWeight:    -10,
		BehaviourPenaltyThreshold: 6,
		BehaviourPenaltyDecay:     0.9,
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               10 * time.Minute,
	}
}

// topicAllowed reports whether name is a topic of the mesh: the heartbeat,
// the releases, or a task's log topic.
func topicAllowed(name string) bool {
	if name == protocol.HeartbeatTopic || name == protocol.ReleaseTopic {
		return true
	}
	id, ok := strings.CutPrefix(name, protocol.LogTopicPrefix)
	return ok && protocol.CheckTaskID(id) == nil
}

// topicFilter is pubsub's subscription filter: only the mesh's topics, at
// most maxTopicsPerRPC in one RPC.
type topicFilter struct{}

func (topicFilter) CanSubscribe(name string) bool { return topicAllowed(name) }

func (topicFilter) FilterIncomingSubscriptions(_ peer.ID, subs []*pb.RPC_SubOpts) ([]*pb.RPC_SubOpts, error) {
	if len(subs) > maxTopicsPerRPC {
		return nil, pubsub.ErrTooManySubscriptions
	}
	return pubsub.FilterSubscriptions(subs, topicAllowed), nil
}

// gossipGuard charges each peer's RPCs against its budget and watches
// scores. Its methods run on pubsub's event loop and inspector goroutine.
type gossipGuard struct {
	log *slog.Logger

	budgets *PeerRates

	mu sync.Mutex
	// graylisted holds the peers logged as graylisted, until their score
	// recovers.
	graylisted map[peer.ID]bool
}

func newGossipGuard(log *slog.Logger) *gossipGuard {
	return &gossipGuard{log: log, budgets: NewPeerRates(gossipUnitsPerSecond, gossipBurst, time.Minute), graylisted: map[peer.ID]bool{}}
}

// rpcCost is what an RPC is charged: one, plus each message, subscription
// and control entry it carries.
func rpcCost(rpc *pubsub.RPC) int {
	n := 1 + len(rpc.GetPublish()) + len(rpc.GetSubscriptions())
	if c := rpc.GetControl(); c != nil {
		for _, ih := range c.GetIhave() {
			n += len(ih.GetMessageIDs())
		}
		for _, iw := range c.GetIwant() {
			n += len(iw.GetMessageIDs())
		}
		n += len(c.GetGraft()) + len(c.GetPrune()) + len(c.GetIdontwant())
	}
	return n
}

// inspect is pubsub's RPC inspector: an error drops the whole RPC.
func (g *gossipGuard) inspect(from peer.ID, rpc *pubsub.RPC) error {
	ok, first := g.budgets.Allow(from, rpcCost(rpc), time.Now())
	if ok {
		return nil
	}
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	g.log.Log(context.Background(), level, "peer sends gossip past its budget; dropping what it sends over the budget",
		"peer", from, "budget_per_second", gossipUnitsPerSecond)
	return errGossipBudget
}

var errGossipBudget = errors.New("gossip budget exceeded")

// scores is pubsub's score inspector: it logs a peer once when it falls
// below the graylist threshold, and once when it is back above the gossip
// threshold.
func (g *gossipGuard) scores(s map[peer.ID]float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, score := range s {
		switch {
		case score < gossipThresholds.GraylistThreshold && !g.graylisted[p]:
			g.graylisted[p] = true
			g.log.Warn("peer graylisted on gossip: it sent invalid messages; everything it sends is ignored until its score recovers",
				"peer", p, "score", score)
		case score >= gossipThresholds.GossipThreshold && g.graylisted[p]:
			// Well above the graylist: a peer whose score hovers at the
			// threshold (ignored, so its counter decays, then counted
			// again) is not logged on every swing.
			delete(g.graylisted, p)
			g.log.Info("peer no longer graylisted on gossip", "peer", p, "score", score)
		}
	}
	// A peer missing from the snapshot (between connections) stays
	// listed, so that reconnecting while graylisted is not logged anew;
	// the list is bounded.
	if len(g.graylisted) > maxGraylistedLogged {
		clear(g.graylisted)
	}
}

// pubsubOptions are the guard's options for gossipsub.
func (g *gossipGuard) pubsubOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithPeerScore(scoreParams(), gossipThresholds),
		pubsub.WithPeerScoreInspect(g.scores, time.Second),
		pubsub.WithAppSpecificRpcInspector(g.inspect),
		pubsub.WithSubscriptionFilter(topicFilter{}),
	}
}
