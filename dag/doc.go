// Package dag owns workspaces as content-addressed Merkle DAGs: import of a
// directory into a UnixFS DAG (CIDv1, raw leaves, content-defined chunks,
// incremental through an index), the blockstore on badger with pins and
// garbage collection, safe export of a DAG into a directory, diff of two
// roots, three-way merge of a result into a directory, and CAR import and
// export.
//
// A DAG is untrusted input: every block is verified against its CID, blocks
// over MaxBlockSize are refused, and export never writes outside its
// destination.
//
// dag knows nothing of libp2p or the API: it gets blocks it lacks through the
// Fetcher interface, which the node implements with bitswap.
package dag
