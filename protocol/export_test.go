package protocol

import "google.golang.org/protobuf/proto"

// protoMarshal encodes h without the encoder's checks.
func protoMarshal(h Heartbeat) ([]byte, error) { return proto.Marshal(heartbeatToWire(h)) }
