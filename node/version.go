package node

// Version is this build's version. `make build` sets it with -ldflags -X;
// it is written only by the linker.
var Version = "dev"
