package p2p

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// GenerateIdentity makes a new ed25519 key pair for a peer.
func GenerateIdentity() (crypto.PrivKey, error) {
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity: %w", err)
	}
	return sk, nil
}

// MarshalIdentity encodes a private key in libp2p's protobuf key format.
func MarshalIdentity(sk crypto.PrivKey) ([]byte, error) {
	b, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("marshal identity: %w", err)
	}
	return b, nil
}

// UnmarshalIdentity decodes a key written by MarshalIdentity.
func UnmarshalIdentity(b []byte) (crypto.PrivKey, error) {
	sk, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity key: %v: %w", err, errdefs.ErrInvalid)
	}
	return sk, nil
}

// meshKeyHeader is libp2p's private-network key file format (the same as an
// IPFS swarm.key), so a mesh key can be shared with other libp2p tooling.
const meshKeyHeader = "/key/swarm/psk/1.0.0/\n/base16/\n"

// GenerateMeshKey returns a new random mesh key in its file format.
func GenerateMeshKey() ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate mesh key: %w", err)
	}
	return []byte(meshKeyHeader + hex.EncodeToString(key) + "\n"), nil
}

// DecodeMeshKey parses a mesh key file.
func DecodeMeshKey(b []byte) (pnet.PSK, error) {
	psk, err := pnet.DecodeV1PSK(io.LimitReader(bytes.NewReader(b), 4096))
	if err != nil {
		return nil, fmt.Errorf("mesh key: %v (expected the format printed by `cortex-peer mesh-key`): %w", err, errdefs.ErrInvalid)
	}
	return psk, nil
}
