// Package scheduler keeps `migrate --max-procs N` migrations in flight: it
// promotes Waiting rows fairly across source hosts, holds the single
// scheduler lease, and trips the stop switch when too many rows fail.
package scheduler
