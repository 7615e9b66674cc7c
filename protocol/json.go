package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
)

// DecodeStrictJSON decodes one JSON value from the wire into v, refusing
// unknown fields and trailing data: what was signed or sent is exactly
// what is read.
func DecodeStrictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}
