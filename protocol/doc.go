// Package protocol owns the wire: the protobuf sources under proto/, the code
// generated from them under gen/ (committed; `make generate` rebuilds it), the
// versioned ids of every peer-to-peer protocol and pubsub topic, the size caps
// of every message, and the conversions between generated types and the
// hand-written Go types the rest of the code uses (toWire/fromWire), so that
// generated types do not spread past the boundary.
//
// Errors cross the wire as codes, never as strings to be matched: see
// ToConnectError and FromConnectError, which map the kinds of package errdefs.
//
// protocol imports no other package of this module except errdefs.
package protocol
