package p2p

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Validator checks a message from the wire before it is delivered or
// forwarded. from is the message's signed author. A non-nil error rejects the
// message (and counts against the peer that relayed it).
type Validator func(from peer.ID, data []byte) error

// Message is a validated pubsub message.
type Message struct {
	From peer.ID // signed author
	Data []byte
}

// Topic is a joined gossipsub topic with its size cap and validator.
type Topic struct {
	name    string
	maxSize int
	topic   *pubsub.Topic
	ps      *pubsub.PubSub
	log     *slog.Logger

	closeOnce sync.Once
}

// Join joins a topic. Every message larger than maxSize, or refused by
// validate, is dropped before delivery and never forwarded.
func (n *Host) Join(name string, maxSize int, validate Validator) (*Topic, error) {
	if maxSize <= 0 || maxSize > protocol.MaxPubsubMessage {
		return nil, fmt.Errorf("join %s: size cap %d out of (0, %d]: %w", name, maxSize, protocol.MaxPubsubMessage, errdefs.ErrInvalid)
	}
	log := n.log.With("topic", name)
	rejected := NewOnceLogger(log)
	err := n.ps.RegisterTopicValidator(name, func(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		from := m.GetFrom()
		if from == n.host.ID() {
			return pubsub.ValidationAccept
		}
		if len(m.Data) > maxSize {
			rejected.Warn(from, "rejected oversized message", "bytes", len(m.Data), "cap", maxSize)
			return pubsub.ValidationReject
		}
		if err := validate(from, m.Data); err != nil {
			rejected.Warn(from, "rejected message", "err", err)
			return pubsub.ValidationReject
		}
		return pubsub.ValidationAccept
	})
	if err != nil {
		return nil, fmt.Errorf("join %s: register validator: %w", name, err)
	}
	t, err := n.ps.Join(name)
	if err != nil {
		_ = n.ps.UnregisterTopicValidator(name)
		return nil, fmt.Errorf("join %s: %w", name, err)
	}
	// Invalid messages on the topic cost their sender score (gossipguard.go).
	if err := t.SetScoreParams(topicScore); err != nil {
		_ = t.Close()
		_ = n.ps.UnregisterTopicValidator(name)
		return nil, fmt.Errorf("join %s: score parameters: %w", name, err)
	}
	return &Topic{name: name, maxSize: maxSize, topic: t, ps: n.ps, log: log}, nil
}

// Publish sends data to the topic.
func (t *Topic) Publish(ctx context.Context, data []byte) error {
	if len(data) > t.maxSize {
		return fmt.Errorf("publish on %s: %d bytes over the cap of %d: %w", t.name, len(data), t.maxSize, errdefs.ErrResourceExhausted)
	}
	if err := t.topic.Publish(ctx, data); err != nil {
		return fmt.Errorf("publish on %s: %w", t.name, err)
	}
	return nil
}

// Subscribe delivers every validated message (including this peer's own) to
// handle until ctx ends. It returns nil when ctx is done.
func (t *Topic) Subscribe(ctx context.Context, handle func(Message)) error {
	run, err := t.SubscribeNow(handle)
	if err != nil {
		return err
	}
	return run(ctx)
}

// SubscribeNow subscribes at once, so that peers learn of it before the
// caller goes on, and returns the loop that delivers messages to handle
// until ctx ends. The caller must run the loop.
func (t *Topic) SubscribeNow(handle func(Message)) (run func(ctx context.Context) error, err error) {
	sub, err := t.topic.Subscribe()
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", t.name, err)
	}
	return func(ctx context.Context) error { return t.deliver(ctx, sub, handle) }, nil
}

func (t *Topic) deliver(ctx context.Context, sub *pubsub.Subscription, handle func(Message)) error {
	defer sub.Cancel()
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, pubsub.ErrSubscriptionCancelled) {
				return nil
			}
			return fmt.Errorf("subscribe %s: %w", t.name, err)
		}
		handle(Message{From: m.GetFrom(), Data: m.Data})
	}
}

// OnPeerJoin calls fn each time a peer subscribes to the topic, until ctx ends.
func (t *Topic) OnPeerJoin(ctx context.Context, fn func(peer.ID)) error {
	ev, err := t.topic.EventHandler()
	if err != nil {
		return fmt.Errorf("topic events %s: %w", t.name, err)
	}
	defer ev.Cancel()
	for {
		e, err := ev.NextPeerEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("topic events %s: %w", t.name, err)
		}
		if e.Type == pubsub.PeerJoin {
			fn(e.Peer)
		}
	}
}

// Peers lists the peers known to be subscribed to the topic.
func (t *Topic) Peers() []peer.ID { return t.topic.ListPeers() }

// Close leaves the topic. Subscriptions must have ended first. Safe to call
// more than once.
func (t *Topic) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = errors.Join(t.topic.Close(), t.ps.UnregisterTopicValidator(t.name))
	})
	return err
}

// OnceLogger logs a warning the first time a peer misbehaves and at debug
// level afterwards, so a hostile peer cannot flood the log.
type OnceLogger struct {
	log  *slog.Logger
	seen firstSight
}

// NewOnceLogger logs through log.
func NewOnceLogger(log *slog.Logger) *OnceLogger {
	return &OnceLogger{log: log}
}

// Warn logs msg about p, at warning level the first time for p.
func (o *OnceLogger) Warn(p peer.ID, msg string, args ...any) {
	args = append(args, "peer", p)
	if o.seen.first(p) {
		o.log.Warn(msg, args...)
		return
	}
	o.log.Debug(msg, args...)
}
