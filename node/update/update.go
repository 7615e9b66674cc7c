// Package update is the running peer's side of the signed self-update:
// releases are announced on a gossip topic and fetched on request from any
// peer that holds them; a peer that trusts the key verifies everything
// before it acts (package release), fetches the binary as a DAG over the
// mesh, installs it under DATA/releases (package releasedir), drains and
// asks its supervisor to start the new version, which rolls it back if it
// is not healthy in time (package supervise). A version rolled back is
// gossiped, signed by the peer, so that the rollout stops spreading.
package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/node/release"
	"github.com/cortex-peer/cortex-peer/node/release/releasekey"
	"github.com/cortex-peer/cortex-peer/node/update/releasedir"
	"github.com/cortex-peer/cortex-peer/p2p"
	"github.com/cortex-peer/cortex-peer/protocol"
	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
	apiv1 "github.com/cortex-peer/cortex-peer/protocol/gen/cortex/api/v1"
)

// Bounds of what the updater takes from the wire and keeps.
const (
	maxMessage  = 16 << 10 // a topic message: an envelope, a failure, or a proof of two
	maxHeld     = 8        // envelopes held to serve and re-announce
	maxSeen     = 64       // releases listed by status
	maxFailures = 64       // failures gossiped by peers, listed by status
	maxReason   = 512
	askTimeout  = 10 * time.Second
	// askEvery bounds how often one peer is asked, however often it
	// joins the topic.
	askEvery = 5 * time.Second
)

// ErrNotSupervised is a swap asked of a peer that runs without the update
// supervisor (no trusted key when it started).
var ErrNotSupervised = fmt.Errorf("this peer runs without the update supervisor ([update] trusted_keys was empty when it started): %w", errdefs.ErrUnavailable)

// Config is the updater's policy.
type Config struct {
	TrustedKeys   []ed25519.PublicKey
	Auto          bool
	Window        Window
	HealthTimeout time.Duration
	Releases      releasedir.Dir
	// Platform is this peer's GOOS/GOARCH; Version the running version.
	Platform, Version string
	// Supervised says the supervisor runs this peer: only then can it
	// swap binaries.
	Supervised bool
	// Reannounce is how often held releases are announced again (0: 5m).
	Reannounce time.Duration
}

// Host is the peer's libp2p host.
type Host interface {
	ID() peer.ID
	Libp2p() host.Host
	Join(topic string, maxSize int, validate p2p.Validator) (*p2p.Topic, error)
}

// Binaries fetches and reads release binaries, which travel as file DAGs.
type Binaries interface {
	// Fetch writes root's file into dest, from the mesh.
	Fetch(ctx context.Context, root cid.Cid, dest string) error
	// Read writes length bytes of root's file to w, from this peer's store.
	Read(ctx context.Context, root cid.Cid, length int64, w io.Writer) error
	// Keep pins root under name so that this peer serves it.
	Keep(name string, root cid.Cid) error
}

// Restarter drains the peer and has its supervisor start releases/current.
type Restarter interface {
	Restart(ctx context.Context)
}

// Deps are what the updater uses of the peer.
type Deps struct {
	Host      Host
	Binaries  Binaries
	Restarter Restarter
}

// Service is the updater.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	topic   *p2p.Topic
	subRun  func(context.Context) error
	wake    chan struct{}
	rejects *p2p.OnceLogger

	mu       sync.Mutex
	state    string
	lastErr  string
	held     []held // verified or published envelopes, newest first
	seen     []*apiv1.UpdateRelease
	failures []*apiv1.UpdateFailure
	ledger   release.Ledger
	asked    map[peer.ID]time.Time
	busy     bool // an install is under way
	closed   bool
}

type held struct {
	env   releasekey.Signed
	m     releasekey.Manifest
	since time.Time // first seen: a release settles before it is installed
}

// settle is how long a release is held before it is installed, so that a
// second envelope of the same version over another binary (a key that
// equivocates) is seen first and both are refused.
const settle = 2 * time.Second

// message is what the release topic carries: one of its fields.
type message struct {
	Release *releasekey.Signed `json:"release,omitempty"`
	// Failure is a version this peer (the message's signed author)
	// rolled back.
	Failure *failure `json:"failure,omitempty"`
	// Equivocation is two envelopes of one version by one key over
	// different binaries: the proof that the key must not be followed
	// for that version.
	Equivocation []releasekey.Signed `json:"equivocation,omitempty"`
}

type failure struct {
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// New joins the release topic and serves release requests.
func New(cfg Config, deps Deps, log *slog.Logger) (*Service, error) {
	if cfg.Reannounce <= 0 {
		cfg.Reannounce = 5 * time.Minute
	}
	s := &Service{cfg: cfg, deps: deps, log: log, wake: make(chan struct{}, 1), rejects: p2p.NewOnceLogger(log), asked: map[peer.ID]time.Time{}, state: "idle"}
	if len(cfg.TrustedKeys) == 0 {
		s.state = "disabled"
	}
	t, err := deps.Host.Join(protocol.ReleaseTopic, maxMessage, validateMessage)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	run, err := t.SubscribeNow(s.onMessage)
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("update: %w", err)
	}
	s.topic, s.subRun = t, run
	deps.Host.Libp2p().SetStreamHandler(protocol.ReleaseProtocol, s.serveHeld)
	if st, err := cfg.Releases.State(); err == nil && st.LastError != "" {
		s.lastErr = st.LastError
	}
	for _, env := range cfg.Releases.LoadHeld() {
		if m, err := selfSigned(env); err == nil {
			s.holdLocked(env, m)
		}
	}
	return s, nil
}

// Serve delivers announcements, asks peers that join the topic for the
// releases they hold, gossips the failures rolled back here, and re-checks
// a waiting release when the install window opens.
func (s *Service) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.subRun(ctx) }()
	go func() {
		defer wg.Done()
		_ = s.topic.OnPeerJoin(ctx, func(p peer.ID) {
			wg.Add(1)
			go func() { defer wg.Done(); s.askPeer(ctx, p) }()
		})
	}()
	wg.Add(1)
	go func() { defer wg.Done(); s.reportRollback(ctx) }()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	announce := time.NewTicker(s.cfg.Reannounce)
	defer announce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			s.consider(ctx)
		case <-tick.C:
			s.consider(ctx)
		case <-announce.C:
			s.reannounce(ctx)
		}
	}
}

// Close leaves the topic and stops serving requests. Safe to call twice.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.deps.Host.Libp2p().RemoveStreamHandler(protocol.ReleaseProtocol)
	return s.topic.Close()
}

// validateMessage checks a topic message's shape and signatures, not
// trust: a peer relays releases of keys it does not trust itself.
func validateMessage(_ peer.ID, data []byte) error {
	var m message
	if err := protocol.DecodeStrictJSON(data, &m); err != nil {
		return fmt.Errorf("release message: %w: %w", err, errdefs.ErrInvalid)
	}
	n := 0
	if m.Release != nil {
		n++
		if _, err := selfSigned(*m.Release); err != nil {
			return err
		}
	}
	if m.Failure != nil {
		n++
		if !releasekey.ValidVersion(m.Failure.Version) || len(m.Failure.Reason) > maxReason {
			return fmt.Errorf("release failure: bad version or reason: %w", errdefs.ErrInvalid)
		}
	}
	if m.Equivocation != nil {
		n++
		if len(m.Equivocation) != 2 {
			return fmt.Errorf("equivocation proof of %d envelopes: %w", len(m.Equivocation), errdefs.ErrInvalid)
		}
		if _, _, err := proveEquivocation(m.Equivocation[0], m.Equivocation[1]); err != nil {
			return err
		}
	}
	if n != 1 {
		return fmt.Errorf("release message with %d parts, want 1: %w", n, errdefs.ErrInvalid)
	}
	return nil
}

// selfSigned checks an envelope's signature over its own key and the
// manifest's fields.
func selfSigned(env releasekey.Signed) (releasekey.Manifest, error) {
	return release.Verify(env, release.Policy{
		TrustedKeys: []ed25519.PublicKey{env.Key},
		Platform:    platformOf(env),
		Now:         time.Time{},
	})
}

// platformOf is the envelope's own platform, so that selfSigned checks
// everything but the platform and expiry.
func platformOf(env releasekey.Signed) string {
	var m struct {
		Platform string `json:"platform"`
	}
	_ = json.Unmarshal(env.Manifest, &m)
	return m.Platform
}

// proveEquivocation checks that a and b are one key's signatures of one
// version over different binaries.
func proveEquivocation(a, b releasekey.Signed) (releasekey.Manifest, releasekey.Manifest, error) {
	ma, err := selfSigned(a)
	if err != nil {
		return ma, ma, err
	}
	mb, err := selfSigned(b)
	if err != nil {
		return ma, mb, err
	}
	var l release.Ledger
	_, _ = l.Observe(a, ma)
	if _, err := l.Observe(b, mb); !errors.Is(err, release.ErrEquivocation) {
		return ma, mb, fmt.Errorf("equivocation proof does not prove one: %w", errdefs.ErrInvalid)
	}
	return ma, mb, nil
}

func (s *Service) onMessage(msg p2p.Message) {
	var m message
	if err := protocol.DecodeStrictJSON(msg.Data, &m); err != nil {
		return // validated already
	}
	switch {
	case m.Release != nil:
		s.observe(*m.Release, msg.From)
	case m.Failure != nil:
		s.recordFailure(msg.From, m.Failure.Version, m.Failure.Reason)
	case m.Equivocation != nil:
		s.recordEquivocation(m.Equivocation[0], m.Equivocation[1], msg.From)
	}
}

// observe checks an envelope against this peer's policy and records the
// verdict; a release this peer should install wakes the install loop.
func (s *Service) observe(env releasekey.Signed, from peer.ID) {
	st, _ := s.cfg.Releases.State()
	highest := s.highest(st)
	m, err := release.Verify(env, release.Policy{
		TrustedKeys: s.cfg.TrustedKeys, Platform: s.cfg.Platform, Highest: highest, Now: time.Now(),
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if errors.Is(err, release.ErrNotNewer) {
			// Already installed (or older): nothing to say about it,
			// but a holder still serves it.
			if vm, verr := selfSigned(env); verr == nil && releasekey.CompareVersions(vm.Version, s.cfg.Version) == 0 {
				s.holdLocked(env, vm)
			}
			return
		}
		s.recordLocked(env, from, "refused: "+err.Error())
		return
	}
	if proof, err := s.ledger.Observe(env, m); err != nil {
		s.recordLocked(env, from, "refused: "+err.Error())
		if proof.Manifest != nil {
			s.dropHeldLocked(m.Version, env.Key)
			go s.publish(context.Background(), message{Equivocation: []releasekey.Signed{proof, env}})
		}
		return
	}
	if f, bad := st.Bad[m.Version]; bad {
		s.recordLocked(env, from, "refused: rolled back here before ("+f.Reason+")")
		return
	}
	s.holdLocked(env, m)
	s.recordLocked(env, from, s.verdictLocked(m))
	s.poke()
}

// poke wakes the install loop.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// verdictLocked says what this peer will do with a release it trusts.
func (s *Service) verdictLocked(m releasekey.Manifest) string {
	failed := s.failedLocked(m.Version)
	switch {
	case failed != "":
		return "stopped: " + failed
	case !release.InRollout(s.deps.Host.ID().String(), m):
		return fmt.Sprintf("out_of_rollout (%.0f%%)", m.Rollout*100)
	case !s.cfg.Auto:
		return "waiting: [update] auto is false"
	case !s.cfg.Supervised:
		return "waiting: " + ErrNotSupervised.Error()
	case !s.cfg.Window.Open(time.Now()):
		return "waiting: outside the install window " + s.cfg.Window.String()
	}
	return "accepted"
}

func (s *Service) failedLocked(version string) string {
	for _, f := range s.failures {
		if f.GetVersion() == version {
			return fmt.Sprintf("rolled back on %s: %s", shortPeer(f.GetPeer()), f.GetReason())
		}
	}
	return ""
}

// highest is the highest version installed or running here.
func (s *Service) highest(st releasedir.State) string {
	h := st.Highest
	cur, _ := s.cfg.Releases.Current()
	for _, v := range []string{s.cfg.Version, cur} {
		if releasekey.ValidVersion(v) && (h == "" || releasekey.CompareVersions(v, h) > 0) {
			h = v
		}
	}
	return h
}

func (s *Service) holdLocked(env releasekey.Signed, m releasekey.Manifest) {
	for i, h := range s.held {
		if h.m.Version == m.Version && h.m.Binary == m.Binary {
			if m.Rollout > h.m.Rollout || m.Expires.After(h.m.Expires) {
				s.held[i] = held{env: env, m: m, since: h.since} // a widened rollout replaces
				s.saveHeldLocked()
			}
			return
		}
	}
	s.held = append([]held{{env: env, m: m, since: time.Now()}}, s.held...)
	slices.SortStableFunc(s.held, func(a, b held) int { return releasekey.CompareVersions(b.m.Version, a.m.Version) })
	if len(s.held) > maxHeld {
		s.held = s.held[:maxHeld]
	}
	s.saveHeldLocked()
}

// saveHeldLocked keeps the held envelopes across restarts.
func (s *Service) saveHeldLocked() {
	envs := make([]releasekey.Signed, 0, len(s.held))
	for _, h := range s.held {
		envs = append(envs, h.env)
	}
	if err := s.cfg.Releases.SaveHeld(envs); err != nil {
		s.log.Debug("cannot save the releases held", "err", err)
	}
}

// dropHeldLocked drops the held envelopes of version signed by key.
func (s *Service) dropHeldLocked(version string, key []byte) {
	s.held = slices.DeleteFunc(s.held, func(h held) bool { return h.m.Version == version && bytes.Equal(h.env.Key, key) })
	s.saveHeldLocked()
}

// recordLocked lists a release and its verdict for status, one entry per
// envelope.
func (s *Service) recordLocked(env releasekey.Signed, from peer.ID, verdict string) {
	var m releasekey.Manifest
	_ = json.Unmarshal(env.Manifest, &m)
	r := &apiv1.UpdateRelease{
		Version: m.Version, Binary: m.Binary, Length: m.Length, Rollout: m.Rollout,
		KeyId: releasekey.KeyID(env.Key), ExpiresUnix: m.Expires.Unix(), From: from.String(),
		Verdict: truncate(verdict, maxReason), SeenUnix: time.Now().Unix(),
	}
	for i, old := range s.seen {
		if old.GetVersion() == r.GetVersion() && old.GetBinary() == r.GetBinary() && old.GetKeyId() == r.GetKeyId() && old.GetRollout() == r.GetRollout() {
			r.From = old.GetFrom()
			s.seen[i] = r
			return
		}
	}
	s.seen = append([]*apiv1.UpdateRelease{r}, s.seen...)
	if len(s.seen) > maxSeen {
		s.seen = s.seen[:maxSeen]
	}
}

func (s *Service) setVerdict(version, verdict string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setVerdictLocked(version, verdict)
}

func isRefusal(v string) bool { return strings.HasPrefix(v, "refused:") }

func (s *Service) recordFailure(from peer.ID, version, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.failures {
		if f.GetPeer() == from.String() && f.GetVersion() == version {
			return
		}
	}
	s.log.Warn("a peer rolled a release back; this peer will not install it", "peer", from, "version", version, "reason", reason)
	s.failures = append([]*apiv1.UpdateFailure{{Version: version, Peer: from.String(), Reason: truncate(reason, maxReason), AtUnix: time.Now().Unix()}}, s.failures...)
	if len(s.failures) > maxFailures {
		s.failures = s.failures[:maxFailures]
	}
	for _, r := range s.seen {
		if r.GetVersion() == version && !isRefusal(r.GetVerdict()) && r.GetVerdict() != "installed" {
			r.Verdict = "stopped: " + s.failedLocked(version)
		}
	}
}

func (s *Service) recordEquivocation(a, b releasekey.Signed, from peer.ID) {
	ma, _, err := proveEquivocation(a, b)
	if err != nil || !release.Trusts(s.cfg.TrustedKeys, a.Key) {
		return // a key this peer does not follow changes nothing here
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Both are refused from now on: the ledger holds the first, the
	// second marks the version bad.
	mb, _ := selfSigned(b)
	_, _ = s.ledger.Observe(a, ma)
	_, _ = s.ledger.Observe(b, mb)
	s.dropHeldLocked(ma.Version, a.Key)
	s.recordLocked(a, from, "refused: "+release.ErrEquivocation.Error()+" (proof gossiped)")
	s.recordLocked(b, from, "refused: "+release.ErrEquivocation.Error()+" (proof gossiped)")
}

// consider installs the newest held release this peer should install.
func (s *Service) consider(ctx context.Context) {
	s.mu.Lock()
	if s.busy || s.closed || len(s.cfg.TrustedKeys) == 0 {
		s.mu.Unlock()
		return
	}
	st, _ := s.cfg.Releases.State()
	highest := s.highest(st)
	var pick *held
	for i := range s.held {
		h := s.held[i]
		// Held is also what this peer serves (what it published, keys
		// it does not trust included): every check runs again here.
		if _, err := release.Verify(h.env, release.Policy{
			TrustedKeys: s.cfg.TrustedKeys, Platform: s.cfg.Platform, Highest: highest, Now: time.Now(),
		}); err != nil {
			continue
		}
		if _, bad := st.Bad[h.m.Version]; bad {
			continue
		}
		v := s.verdictLocked(h.m)
		s.setVerdictLocked(h.m.Version, v)
		if wait := settle - time.Since(h.since); v == "accepted" && wait > 0 {
			time.AfterFunc(wait, s.poke)
			break
		}
		if v == "accepted" {
			pick = &h
			break
		}
	}
	if pick == nil {
		s.mu.Unlock()
		return
	}
	s.busy = true
	s.mu.Unlock()
	err := s.install(ctx, pick.env, pick.m)
	s.mu.Lock()
	s.busy = false
	if err != nil {
		s.lastErr = fmt.Sprintf("install %s: %v", pick.m.Version, err)
		s.state = "idle"
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("release install failed; it will be tried again", "version", pick.m.Version, "err", err)
		_ = s.cfg.Releases.Update(func(st *releasedir.State) { st.LastError = fmt.Sprintf("install %s: %v", pick.m.Version, err) })
		s.setVerdict(pick.m.Version, "failed: "+err.Error())
	}
}

func (s *Service) setVerdictLocked(version, verdict string) {
	for _, r := range s.seen {
		if r.GetVersion() == version && !isRefusal(r.GetVerdict()) {
			r.Verdict = truncate(verdict, maxReason)
		}
	}
}

func (s *Service) setState(st string) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
}

// install fetches, checks, installs and switches to m, then restarts.
func (s *Service) install(ctx context.Context, env releasekey.Signed, m releasekey.Manifest) error {
	root, err := cid.Parse(m.Binary)
	if err != nil {
		return fmt.Errorf("%w: %v", release.ErrMalformed, err)
	}
	s.log.Info("installing release", "version", m.Version, "binary", m.Binary, "bytes", m.Length, "key", releasekey.KeyID(env.Key))
	s.setState("fetching")
	s.setVerdict(m.Version, "fetching")
	if err := os.MkdirAll(s.cfg.Releases.Root, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", s.cfg.Releases.Root, err)
	}
	fetched := filepath.Join(s.cfg.Releases.Root, ".fetch-"+m.Version)
	defer os.Remove(fetched)
	if err := s.deps.Binaries.Fetch(ctx, root, fetched); err != nil {
		return fmt.Errorf("fetch binary %s: %w", m.Binary, err)
	}
	faultPoint("fetched")
	// The fetched file is checked before it is installed (a binary longer
	// or shorter than signed, or other bytes, goes no further) and again
	// as written.
	if err := checkFile(m, fetched); err != nil {
		return err
	}
	s.setState("installing")
	f, err := os.Open(fetched)
	if err != nil {
		return fmt.Errorf("open fetched binary: %w", err)
	}
	defer f.Close()
	if err := s.cfg.Releases.Install(m.Version, f, func(path string) error {
		faultPoint("written")
		return checkFile(m, path)
	}); err != nil {
		return err
	}
	faultPoint("installed")
	if err := s.deps.Binaries.Keep("release:"+m.Version, root); err != nil {
		s.log.Warn("cannot pin the release binary; other peers fetch it elsewhere", "err", err)
	}
	if err := s.cfg.Releases.Switch(m.Version); err != nil {
		return err
	}
	faultPoint("switched")
	_ = s.cfg.Releases.Prune()
	s.setVerdict(m.Version, "installed")
	s.setState("restarting")
	s.log.Info("release installed; draining and restarting into it", "version", m.Version)
	s.deps.Restarter.Restart(ctx)
	return nil
}

func checkFile(m releasekey.Manifest, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check binary: %w", err)
	}
	defer f.Close()
	return release.CheckBinary(m, f)
}

// Publish announces an envelope whose binary this peer holds: its
// signature and fields are checked and the binary is read back from the
// store and checked against the signed length and hash first.
func (s *Service) Publish(ctx context.Context, envelope []byte) (*apiv1.UpdatePublishResponse, error) {
	env, err := release.Decode(envelope)
	if err != nil {
		return nil, err
	}
	m, err := selfSigned(env)
	if err != nil {
		return nil, err
	}
	root, err := cid.Parse(m.Binary)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", release.ErrMalformed, err)
	}
	pr, pw := io.Pipe()
	checked := make(chan error, 1)
	go func() { checked <- release.CheckBinary(m, pr); _ = pr.Close() }()
	rerr := s.deps.Binaries.Read(ctx, root, m.Length, pw)
	_ = pw.CloseWithError(rerr)
	if err := <-checked; err != nil {
		if rerr != nil {
			return nil, fmt.Errorf("read the binary %s from this peer's store (put it first): %w", m.Binary, rerr)
		}
		return nil, err
	}
	if err := s.deps.Binaries.Keep("release:"+m.Version, root); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.holdLocked(env, m)
	s.mu.Unlock()
	if err := s.publish(ctx, message{Release: &env}); err != nil {
		return nil, err
	}
	// This peer acts on it like any other (it may trust the key too).
	s.observe(env, s.deps.Host.ID())
	s.log.Info("release published", "version", m.Version, "binary", m.Binary, "rollout", m.Rollout, "key", releasekey.KeyID(env.Key))
	return &apiv1.UpdatePublishResponse{
		Version: m.Version, Binary: m.Binary, Length: m.Length, Rollout: m.Rollout,
		KeyId: releasekey.KeyID(env.Key), Peers: uint32(len(s.topic.Peers())),
	}, nil
}

func (s *Service) publish(ctx context.Context, m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode release message: %w", err)
	}
	return s.topic.Publish(ctx, b)
}

func (s *Service) reannounce(ctx context.Context) {
	for _, env := range s.serving() {
		_ = s.publish(ctx, message{Release: &env})
	}
}

// serving lists the held envelopes this peer passes on: not expired, and
// not a version rolled back here.
func (s *Service) serving() []releasekey.Signed {
	st, _ := s.cfg.Releases.State()
	s.mu.Lock()
	defer s.mu.Unlock()
	envs := make([]releasekey.Signed, 0, len(s.held))
	for _, h := range s.held {
		if _, bad := st.Bad[h.m.Version]; !bad && time.Now().Before(h.m.Expires) {
			envs = append(envs, h.env)
		}
	}
	return envs
}

// reportRollback gossips the versions the supervisor rolled back here.
func (s *Service) reportRollback(ctx context.Context) {
	st, err := s.cfg.Releases.State()
	if err != nil {
		return
	}
	if st.RolledBack != "" {
		s.mu.Lock()
		s.state = "rolled_back"
		s.mu.Unlock()
	}
	pending := 0
	for _, f := range st.Bad {
		if !f.Gossiped {
			pending++
		}
	}
	if pending == 0 {
		return
	}
	s.log.Info("telling the mesh of a rollback once a peer listens", "versions", pending)
	// A message published before any peer listens is lost: wait for one.
	for len(s.topic.Peers()) == 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	var sent []string
	for v, f := range st.Bad {
		if f.Gossiped {
			continue
		}
		if err := s.publish(ctx, message{Failure: &failure{Version: v, Reason: truncate(f.Reason, maxReason)}}); err != nil {
			s.log.Warn("cannot gossip a rollback", "version", v, "err", err)
			continue
		}
		s.recordFailure(s.deps.Host.ID(), v, f.Reason)
		sent = append(sent, v)
	}
	if len(sent) > 0 {
		_ = s.cfg.Releases.Update(func(st *releasedir.State) {
			for _, v := range sent {
				f := st.Bad[v]
				f.Gossiped = true
				st.Bad[v] = f
			}
		})
	}
}

// Rollback switches to the previous version now and restarts into it.
func (s *Service) Rollback(ctx context.Context) (*apiv1.UpdateRollbackResponse, error) {
	if !s.cfg.Supervised {
		return nil, ErrNotSupervised
	}
	from, to, err := s.cfg.Releases.Rollback("rolled back by hand")
	if err != nil {
		return nil, err
	}
	s.setState("restarting")
	s.log.Warn("rolling back by hand; draining and restarting", "from", from, "to", to)
	go s.deps.Restarter.Restart(context.WithoutCancel(ctx))
	return &apiv1.UpdateRollbackResponse{From: from, To: to}, nil
}

// Status is what the updater knows.
func (s *Service) Status(context.Context) *apiv1.UpdateStatus {
	d := s.cfg.Releases
	st, err := d.State()
	cur, _ := d.Current()
	prev, _ := d.Previous()
	s.mu.Lock()
	defer s.mu.Unlock()
	state := s.state
	if state == "idle" && st.Trial != "" && st.Trial == cur {
		state = "trial"
	}
	out := &apiv1.UpdateStatus{
		Version: s.cfg.Version, Current: cur, Previous: prev, Highest: s.highest(st), State: state,
		LastError: s.lastErr, Enabled: len(s.cfg.TrustedKeys) > 0, Auto: s.cfg.Auto, Supervised: s.cfg.Supervised,
		Window: s.cfg.Window.String(), HealthTimeoutMs: s.cfg.HealthTimeout.Milliseconds(),
	}
	if err != nil && out.LastError == "" {
		out.LastError = err.Error()
	}
	if st.LastError != "" {
		out.LastError = st.LastError
	}
	for _, k := range s.cfg.TrustedKeys {
		out.TrustedKeys = append(out.TrustedKeys, releasekey.KeyID(k))
	}
	for v := range st.Bad {
		out.Bad = append(out.Bad, v)
	}
	slices.Sort(out.Bad)
	for _, r := range s.seen {
		out.Releases = append(out.Releases, cloneRelease(r))
	}
	for _, f := range s.failures {
		out.Failures = append(out.Failures, &apiv1.UpdateFailure{Version: f.GetVersion(), Peer: f.GetPeer(), Reason: f.GetReason(), AtUnix: f.GetAtUnix()})
	}
	return out
}

func cloneRelease(r *apiv1.UpdateRelease) *apiv1.UpdateRelease {
	return &apiv1.UpdateRelease{Version: r.GetVersion(), Binary: r.GetBinary(), Length: r.GetLength(), Rollout: r.GetRollout(),
		KeyId: r.GetKeyId(), ExpiresUnix: r.GetExpiresUnix(), From: r.GetFrom(), Verdict: r.GetVerdict(), SeenUnix: r.GetSeenUnix()}
}

// heldReply answers a release request: the releases a peer holds and the
// versions it rolled back (the stream is authenticated, so the failures
// are the answering peer's own word).
type heldReply struct {
	Releases []releasekey.Signed `json:"releases"`
	Failures []failure           `json:"failures,omitempty"`
}

// maxReply bounds a heldReply.
const maxReply = maxHeld*(releasekey.MaxSignedSize+64) + maxFailures*(maxReason+96) + 128

// serveHeld answers a release request.
func (s *Service) serveHeld(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(askTimeout))
	reply := heldReply{Releases: s.serving()}
	if state, err := s.cfg.Releases.State(); err == nil {
		for v, f := range state.Bad {
			if len(reply.Failures) < maxFailures {
				reply.Failures = append(reply.Failures, failure{Version: v, Reason: truncate(f.Reason, maxReason)})
			}
		}
	}
	_ = json.NewEncoder(st).Encode(reply)
}

// askPeer asks a peer that joined the topic for the releases it holds and
// the versions it rolled back, at most once per askEvery.
func (s *Service) askPeer(ctx context.Context, p peer.ID) {
	s.mu.Lock()
	if t, ok := s.asked[p]; ok && time.Since(t) < askEvery {
		s.mu.Unlock()
		return
	}
	s.asked[p] = time.Now()
	if len(s.asked) > 4096 {
		clear(s.asked)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	st, err := s.deps.Host.Libp2p().NewStream(ctx, p, protocol.ReleaseProtocol)
	if err != nil {
		return
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(askTimeout))
	_ = st.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(st, maxReply))
	if err != nil {
		return
	}
	var reply heldReply
	if err := protocol.DecodeStrictJSON(b, &reply); err != nil || len(reply.Releases) > maxHeld || len(reply.Failures) > maxFailures {
		s.rejects.Warn(p, "peer answered a release request with garbage", "err", err, "envelopes", len(reply.Releases))
		return
	}
	for _, f := range reply.Failures {
		if releasekey.ValidVersion(f.Version) && len(f.Reason) <= maxReason {
			s.recordFailure(p, f.Version, f.Reason)
		}
	}
	for _, env := range reply.Releases {
		if _, err := selfSigned(env); err != nil {
			s.rejects.Warn(p, "peer served a release whose signature does not verify", "err", err)
			return
		}
		s.observe(env, p)
	}
}

func shortPeer(p string) string {
	if len(p) > 12 {
		return "…" + p[len(p)-8:]
	}
	return p
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
