// Package buildinfo holds what the linker writes into a build. It is its
// own package so that the CLI client and the peer report the same version
// without the client linking the peer.
package buildinfo

// Version is this build's version. `make build` sets it with -ldflags -X;
// it is written only by the linker.
var Version = "dev"
