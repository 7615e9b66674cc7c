// Package images owns the container images of one peer: importing image
// archives (OCI layout and docker-archive tarballs), pulling from registries,
// listing and removing them, all in one containerd namespace, and unpacking
// them to a snapshotter so that the executor can run them.
//
// Every image is stored for the host platform only and is unpacked before it
// is named: an image that cannot be unpacked is not recorded at all, so a
// failed import or pull leaves nothing that List shows, and its content is
// released to containerd's garbage collector.
//
// Archives and registries are untrusted input. Blob sizes are capped (see
// WithMaxBlobSize), JSON documents are bounded before they are read into
// memory, every referenced blob must be present and match its digest, and
// layers are extracted by containerd, which resolves every path inside the
// snapshot. Errors wrap the kinds of protocol/errdefs: ErrInvalid for a
// malformed archive, ErrResourceExhausted for a cap, ErrNotFound,
// ErrUnavailable when containerd or a registry cannot be reached,
// ErrUnauthenticated when a registry refuses the credentials.
//
// images knows nothing of libp2p, the mesh or the API: it must not import
// p2p, node or protocol (other than protocol/errdefs).
package images
