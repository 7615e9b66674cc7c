// Package errdefs defines the kinds of errors shared by every layer of
// cortex-peer. Errors are wrapped with what was being done and classified by
// wrapping one of these sentinels, then checked with errors.Is. The protocol
// package maps the kinds to wire codes in one place.
//
// errdefs imports nothing but the standard library.
package errdefs

import "errors"

var (
	// ErrInvalid: the request or input is malformed or out of bounds.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: the thing asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the thing to create exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable: the component is shutting down, not started, or unreachable; try again later.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthenticated: credentials are missing or wrong.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the caller is known but not allowed to do this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrResourceExhausted: a limit was reached (size cap, quota, disk).
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrLocked: the resource is held by another process.
	ErrLocked = errors.New("locked")
	// ErrStale: the request refers to a state that has moved on (a
	// snapshot's ref after the page changed); read it again.
	ErrStale = errors.New("stale")
)
