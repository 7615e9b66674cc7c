// Package browser is the peer's browser capability: it hosts sessions on
// this peer's Chromium (bridges/cdp) and routes a call for a session
// hosted elsewhere to its peer over the mesh's browser protocol, so that
// any peer drives any session. It stores what the bridge makes
// (screenshots, PDFs, downloads, full snapshots, saved states) as DAGs, and
// enforces the [browser] policy: which peers may open sessions here, and
// which origins a session may load.
//
// The mesh carries the local API's own messages (cortex.api.v1.Browser*),
// so the peer that hosts a session answers exactly what the API asked and
// there is one conversion, to the bridge's types, on that peer. It must not
// import node.
package browser
