// Package agent is the runtime of migrate-agent: per role, a jittered poll
// loop claims rows for this host under a lease, a handler does the step
// while the lease is renewed, and the row is advanced, failed, retried or
// given back through the fenced Store. The engine, storage and DNS packages
// supply the handlers (Handler).
//
// An agent serves one host ID at a time (its registry entry is a lease on
// it), recovers rows a dead predecessor left behind, and stops gracefully:
// it stops claiming, waits for running steps, then cancels them.
package agent
