// Package p2p owns the peer's place in the mesh: the libp2p host (identity,
// TCP and QUIC transports, private-network PSK, allowlist gater, resource and
// connection managers), discovery (bootstrap addresses, mDNS, a kad-DHT kept
// apart from any public one), gossipsub topics with a validator and a size cap
// each, the capability heartbeat and the peer book it fills.
//
// p2p knows the wire only through package protocol. It must not import dag,
// runtime, bridges or node.
package p2p
