// Package runtime will own running a task spec in containerd: images,
// mounts, limits, the security profile, live output, kill and cleanup (see
// DESIGN.md and the sandboxed-tasks issue).
//
// runtime must not import p2p or node: it knows nothing of the mesh.
package runtime
