package protocol

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"syscall"

	"connectrpc.com/connect"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// errorCodes maps each error kind to its wire code; the order matters only in
// that the first match wins.
var errorCodes = []struct {
	kind error
	code connect.Code
}{
	{errdefs.ErrInvalid, connect.CodeInvalidArgument},
	{errdefs.ErrNotFound, connect.CodeNotFound},
	{errdefs.ErrAlreadyExists, connect.CodeAlreadyExists},
	{errdefs.ErrUnavailable, connect.CodeUnavailable},
	{errdefs.ErrUnauthenticated, connect.CodeUnauthenticated},
	{errdefs.ErrPermissionDenied, connect.CodePermissionDenied},
	{errdefs.ErrResourceExhausted, connect.CodeResourceExhausted},
	{errdefs.ErrLocked, connect.CodeFailedPrecondition},
	{errdefs.ErrStale, connect.CodeAborted},
	// What the file system says of a path a caller named: a missing
	// directory is not an internal error of the peer.
	{fs.ErrNotExist, connect.CodeNotFound},
	{fs.ErrPermission, connect.CodePermissionDenied},
	// A full disk, wherever the peer met it (its store, a destination).
	{syscall.ENOSPC, connect.CodeResourceExhausted},
	{syscall.EDQUOT, connect.CodeResourceExhausted},
	{context.Canceled, connect.CodeCanceled},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
}

// ToConnectError turns an error from the node into a wire error carrying a
// code. The message keeps the full wrapped text so the user sees what failed.
func ToConnectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.kind) {
			return connect.NewError(m.code, err)
		}
	}
	return connect.NewError(connect.CodeInternal, err)
}

// ErrorText is err's text as a task's result or record carries it, where it
// is a string: the code a live call would carry is written in front of it
// (resource_exhausted: no space left on …), so that whoever reads the
// result tells a full disk from a bug. Errors of no kind are as they are.
func ErrorText(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	code := connect.CodeOf(ToConnectError(err))
	if code == connect.CodeInternal || code == connect.CodeUnknown {
		return msg
	}
	// A text that came with its code (a result from another peer, joined
	// to what followed from it here) keeps the code it names first.
	for _, m := range errorCodes {
		if strings.HasPrefix(msg, m.code.String()+": ") {
			return msg
		}
	}
	return code.String() + ": " + msg
}

// FromConnectError turns a wire error back into an error that wraps the
// matching errdefs kind, so clients check it with errors.Is.
func FromConnectError(err error) error {
	if err == nil {
		return nil
	}
	code := connect.CodeOf(err)
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	for _, m := range errorCodes {
		if m.code == code && isKind(m.kind) {
			return &wireError{kind: m.kind, msg: msg}
		}
	}
	return errors.New(msg)
}

// isKind reports whether k is an errdefs kind or a context error: the
// kinds a wire code is read back as (a NotFound is errdefs.ErrNotFound,
// never fs.ErrNotExist).
func isKind(k error) bool {
	var errno syscall.Errno
	return !errors.Is(k, fs.ErrNotExist) && !errors.Is(k, fs.ErrPermission) && !errors.As(k, &errno)
}

// wireError is an error received from the wire, classified by its code.
type wireError struct {
	kind error
	msg  string
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.kind }
