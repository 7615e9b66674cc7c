package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// Stable error codes: the first word of every tool error's text, so an agent
// (or a test) can branch on it without parsing prose.
const (
	CodeInvalidArgument   = "invalid_argument"
	CodeNotFound          = "not_found"
	CodeAlreadyExists     = "already_exists"
	CodeUnavailable       = "unavailable"
	CodeUnauthenticated   = "unauthenticated"
	CodePermissionDenied  = "permission_denied"
	CodeResourceExhausted = "resource_exhausted"
	CodeCancelled         = "cancelled"
	CodeDeadlineExceeded  = "deadline_exceeded"
	CodeStaleRef          = "stale_ref"
	CodeInternal          = "internal"
)

var codes = []struct {
	kind error
	code string
}{
	{errdefs.ErrInvalid, CodeInvalidArgument},
	{errdefs.ErrNotFound, CodeNotFound},
	{errdefs.ErrAlreadyExists, CodeAlreadyExists},
	{errdefs.ErrUnavailable, CodeUnavailable},
	{errdefs.ErrLocked, CodeUnavailable},
	{errdefs.ErrUnauthenticated, CodeUnauthenticated},
	{errdefs.ErrPermissionDenied, CodePermissionDenied},
	{errdefs.ErrResourceExhausted, CodeResourceExhausted},
	{syscall.ENOSPC, CodeResourceExhausted},
	{syscall.EDQUOT, CodeResourceExhausted},
	{errdefs.ErrStale, CodeStaleRef},
	{context.Canceled, CodeCancelled},
	{context.DeadlineExceeded, CodeDeadlineExceeded},
}

// CodeOf classifies err by the errdefs kind it wraps.
func CodeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.kind) {
			return c.code
		}
	}
	return CodeInternal
}

// toolError is what a handler returns: the SDK turns it into a result with
// IsError set, so the session goes on and the agent reads "code: message".
func toolError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", CodeOf(err), err)
}

// invalid is an invalid_argument error about the caller's input.
func invalid(format string, args ...any) error {
	return toolError(fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalid)...))
}
