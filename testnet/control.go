package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// ControlSocket is the socket, in a process testnet's dir, through which
// `cortex-peer testnet restart` asks the running testnet to restart a peer.
// The testnet itself restarts it, rather than the command starting the peer
// on its own, so that the peer stays the testnet's child: reaped by it,
// reported when it dies, stopped with it.
const ControlSocket = "testnet.sock"

// Bounds of the control socket.
const (
	// controlRequestTimeout bounds how long a client may take to send its
	// request once connected.
	controlRequestTimeout = 10 * time.Second
	// RestartTimeout bounds a restart: the peer's start and its return
	// into the mesh.
	RestartTimeout = 2 * time.Minute
	// maxControlRequest bounds the size of a request.
	maxControlRequest = 4 << 10
)

type controlRequest struct {
	Restart string `json:"restart"`
}

// RestartReply is a testnet's answer to a restart request.
type RestartReply struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	Pid        int    `json:"pid"`
	DataDir    string `json:"data_dir"`
	WasRunning bool   `json:"was_running"`
	// Error says why the restart failed; NotFound is set when no peer has
	// the name.
	Error    string `json:"error,omitempty"`
	NotFound bool   `json:"not_found,omitempty"`
}

// ListenControl opens the control socket in the testnet's dir (mode 0600:
// only its user may restart peers). Serve it with ServeControl.
func (pn *ProcessNet) ListenControl() (net.Listener, error) {
	path := filepath.Join(pn.opts.Dir, ControlSocket)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("testnet: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("testnet: control socket: %w", err)
	}
	return ln, nil
}

// ServeControl answers restart requests on ln until ctx ends, then closes
// ln, which removes the socket, and returns once every request has ended.
func (pn *ProcessNet) ServeControl(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			ln.Close()
			return fmt.Errorf("testnet: control socket: %w", err)
		}
		wg.Go(func() { pn.serveControlConn(ctx, conn) })
	}
}

func (pn *ProcessNet) serveControlConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var req controlRequest
	_ = conn.SetReadDeadline(time.Now().Add(controlRequestTimeout))
	if err := json.NewDecoder(io.LimitReader(conn, maxControlRequest)).Decode(&req); err != nil {
		_ = json.NewEncoder(conn).Encode(RestartReply{Error: fmt.Sprintf("bad request: %v", err)})
		return
	}
	ctx, cancel := context.WithTimeout(ctx, RestartTimeout)
	defer cancel()
	_ = json.NewEncoder(conn).Encode(pn.restartReply(ctx, req.Restart))
}

// restartReply restarts the peer named name and waits for it to rejoin.
func (pn *ProcessNet) restartReply(ctx context.Context, name string) RestartReply {
	reply := RestartReply{Name: name}
	p, wasRunning, err := pn.RestartPeer(ctx, name)
	if p != nil {
		reply.ID, reply.DataDir, reply.Pid, reply.WasRunning = p.id(), p.DataDir, p.Pid(), wasRunning
	}
	if err == nil {
		if rerr := pn.WaitRejoined(ctx, p); rerr != nil {
			err = fmt.Errorf("%s restarted (pid %d) but did not rejoin the mesh: %w; see %s", name, reply.Pid, rerr, p.LogFile)
		}
	}
	if err != nil {
		reply.Error = err.Error()
		reply.NotFound = errors.Is(err, errdefs.ErrNotFound)
	}
	return reply
}

// RequestRestart asks the testnet running in dir to restart its peer named
// name (stopping it first if it runs) and waits until the peer is back in
// the mesh. The error wraps errdefs.ErrNotFound for an unknown name and
// errdefs.ErrUnavailable when no testnet runs in dir.
func RequestRestart(ctx context.Context, dir, name string) (RestartReply, error) {
	path := filepath.Join(dir, ControlSocket)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return RestartReply{}, fmt.Errorf("no testnet is running in %s (cannot reach %s: %v): %w", dir, path, err, errdefs.ErrUnavailable)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(controlRequest{Restart: name}); err != nil {
		return RestartReply{}, fmt.Errorf("restart %s: send to the testnet: %w", name, err)
	}
	var reply RestartReply
	if err := json.NewDecoder(conn).Decode(&reply); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return RestartReply{}, fmt.Errorf("restart %s: no answer from the testnet: %w", name, err)
	}
	switch {
	case reply.NotFound:
		return reply, notFoundError{reply.Error}
	case reply.Error != "":
		return reply, errors.New(reply.Error)
	}
	return reply, nil
}
