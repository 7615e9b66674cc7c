package main

import "time"

// callTimeout bounds one tool call, a cold start's included.
const callTimeout = 3 * time.Minute

// shutdownGrace is how long a server gets to end politely.
const shutdownGrace = 5 * time.Second
