// Package runtime owns running a task spec in containerd: images, mounts,
// limits, the security profile, live output, kill and cleanup (see
// DESIGN.md and the sandboxed-tasks issue).
//
// A Spec comes from an untrusted caller. Policy.Apply completes it with the
// peer's defaults and refuses anything malformed (errdefs.ErrInvalid) or
// beyond the peer's caps (errdefs.ErrPermissionDenied); a spec never names
// a host path (WorkspaceDir is set by the peer itself).
//
// Containerd is the Executor. Every task gets the whole security profile,
// which a spec cannot turn off: its own pid, ipc, uts, mount, cgroup and
// (unless host network was granted) network namespaces with only loopback;
// no capabilities at all, no-new-privileges, containerd's default seccomp
// profile; a read-only root filesystem, containerd's masked and read-only
// /proc and /sys paths; a size-capped nosuid,nodev,noexec tmpfs at /tmp; the
// workspace bind-mounted nosuid,nodev at /workspace and owned by the task's
// user; a non-root user; cgroup limits on memory (swap pinned to 0 where the
// kernel accounts for it), CPU quota and pids; RLIMIT_NOFILE and no core
// dumps. The gVisor tier runs the same spec with runsc as the runc shim's
// runtime binary, through a wrapper in the executor's state dir that adds
// --network=none.
//
// Output flows as Chunks, each write of the task one chunk, with per-stream
// sequence numbers, through a bounded channel: a reader that falls behind
// slows the task down rather than growing memory.
//
// Containers are labelled io.cortex-peer.owner (the executor's Owner) and
// io.cortex-peer.task; Cleanup removes what a crashed run of the same owner
// left behind, and nothing of other owners sharing the containerd.
//
// runtime must not import p2p or node: it knows nothing of the mesh.
package runtime
