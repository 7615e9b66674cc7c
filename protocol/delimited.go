package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-peer/cortex-peer/protocol/errdefs"
)

// WriteDelimited writes m as a uvarint length then its protobuf bytes, the
// framing of every stream protocol here. A message over max is refused
// before anything is written.
func WriteDelimited(w io.Writer, m proto.Message, max int) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %T: %w", m, err)
	}
	if len(b) > max {
		return fmt.Errorf("encode %T: %d bytes over the cap of %d: %w", m, len(b), max, errdefs.ErrInvalid)
	}
	out := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err = w.Write(append(out, b...))
	return err
}

// ReadDelimited reads one message written by WriteDelimited into m. A
// length over max is refused before the body is read; a malformed body is
// ErrInvalid. io.EOF means the stream ended cleanly before a message.
func ReadDelimited(r *bufio.Reader, m proto.Message, max int) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("read %T length: %w", m, err)
	}
	if n > uint64(max) {
		return fmt.Errorf("read %T: %d bytes over the cap of %d: %w", m, n, max, errdefs.ErrInvalid)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("read %T: %w", m, err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("decode %T: %v: %w", m, err, errdefs.ErrInvalid)
	}
	return nil
}

// validTaskID: task ids name containers, directories and topics on the
// executor, so only a safe alphabet is accepted from the wire. A loop
// rather than a regexp, which every command of the binary compiled at
// start.
func validTaskID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

// CheckTaskID refuses a task id that is not 1..64 of [a-z0-9-] starting
// with a letter or digit.
func CheckTaskID(id string) error {
	if !validTaskID(id) {
		return fmt.Errorf("task id %q: want 1 to 64 of a-z, 0-9 and -: %w", id, errdefs.ErrInvalid)
	}
	return nil
}
