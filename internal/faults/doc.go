// Package faults is the fault suite (`make test-faults`): each test starts
// a small fleet of real servers with internal/demo, injects one fault —
// kill -9 of an agent or the scheduler at a chosen moment, a server stopped,
// an object corrupted or deleted, a DNS key rotated, bad input — lets the
// fleet settle, and ends with demo.CheckInvariants. The tests are built
// with the "faults" tag only; their results become docs/reliability.md.
package faults
