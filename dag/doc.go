// Package dag will own workspaces as content-addressed Merkle DAGs: import
// and export of directories, chunking, diff of two roots, three-way merge
// into a directory, the blockstore on badger, the bitswap exchange and CAR
// import/export (see DESIGN.md and the workspace issue).
//
// dag must not import p2p, protocol's generated API types, or node: the node
// wires it to the mesh.
package dag
