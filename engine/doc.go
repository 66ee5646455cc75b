// Package engine defines what a database engine does for one migration:
// preflight, block and unblock writes, dump with users and grants, import,
// verify against the manifest, close the source, drop. Implementations live
// in engine/mysql and engine/postgres.
package engine
