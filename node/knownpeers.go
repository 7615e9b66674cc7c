package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortex-peer/cortex-peer/node/store"
	"github.com/cortex-peer/cortex-peer/p2p"
)

// Known peers are kept in the store under this prefix, keyed by peer id,
// with their full multiaddrs, one a line, as value.
var knownPeersPrefix = []byte("p2p/known/")

// maxKnownPeersDialed bounds the peers redialed at start; the mesh's
// heartbeats introduce the rest.
const maxKnownPeersDialed = 64

var errEnough = errors.New("enough known peers")

func loadKnownPeers(st *store.Store, log *slog.Logger) []peer.AddrInfo {
	var out []peer.AddrInfo
	err := st.Scan(knownPeersPrefix, func(_, v []byte) error {
		var addrs []ma.Multiaddr
		for _, line := range strings.Split(string(v), "\n") {
			if a, err := ma.NewMultiaddr(line); err == nil {
				addrs = append(addrs, a)
			}
		}
		if infos, err := peer.AddrInfosFromP2pAddrs(addrs...); err == nil {
			out = append(out, infos...)
		}
		if len(out) >= maxKnownPeersDialed {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		log.Warn("read known peers", "err", err)
	}
	return out
}

// saveKnownPeersLoop redials the peers known from the last run, then records
// the live peers of the book whenever one appears or changes address, so a
// restarted peer (even one killed seconds after it met the mesh) finds its
// mesh again when its bootstrap peers are gone or have moved.
func saveKnownPeersLoop(ctx context.Context, host *p2p.Host, book *p2p.Book, st *store.Store, known []peer.AddrInfo, interval time.Duration, log *slog.Logger) error {
	if len(known) > 0 {
		log.Info("redialling the peers known from the last run", "peers", len(known))
	}
	for _, ai := range known {
		if ctx.Err() != nil {
			return nil
		}
		host.Connect(ctx, ai)
	}
	saved := map[peer.ID]string{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, e := range book.List(time.Now(), false) {
			if len(e.Addrs) == 0 {
				continue
			}
			full := make([]string, len(e.Addrs))
			for i, a := range e.Addrs {
				full[i] = a.String() + "/p2p/" + e.ID.String()
			}
			value := strings.Join(full, "\n")
			if saved[e.ID] == value {
				continue
			}
			key := append(append([]byte{}, knownPeersPrefix...), e.ID...)
			if err := st.Put(key, []byte(value)); err != nil {
				return fmt.Errorf("save known peer %s: %w", e.ID, err)
			}
			saved[e.ID] = value
		}
	}
}
