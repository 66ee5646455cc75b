// Package storage defines the object store that keeps dumps (streaming put
// with size and SHA-256, get, stat, delete, list by prefix) and its
// retention and customer download links. Backends live in storage/s3 and
// storage/file.
package storage
