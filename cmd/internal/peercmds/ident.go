package peercmds

import (
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func peerIDOf(sk crypto.PrivKey) (string, error) {
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}
