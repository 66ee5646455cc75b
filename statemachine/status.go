// Package statemachine holds the contract every fleetmigrate component shares:
// the statuses a database migration passes through, which role may move a row
// from which status to which, and the Store that persists rows in the shared
// state database with compare-and-set transitions, leases and fences.
//
// A row is owned by nobody while it sits in a queued status ("To dump") and by
// exactly one agent, identified by owner and fence, while it sits in a working
// status ("Dumping"). See docs/state-machine.md for the diagram generated from
// the tables in this package.
package statemachine

import (
	"fmt"
	"strings"
)

// Status is the state of one database's migration. The string values are the
// contract: they are stored in the state table and shown to operators.
type Status string

// The statuses, in the order a migration normally passes through them. Each
// comment says who moves a row OUT of the status.
const (
	// Waiting: planned, not started. The scheduler promotes it to ToDump when
	// a slot is free; an operator may cancel it.
	Waiting Status = "Waiting"
	// ToSync: an online row, promoted; waiting for the destination's sync
	// agent.
	ToSync Status = "To sync"
	// Syncing: claimed by the destination's sync agent, which prepares the
	// destination, starts the change stream from a consistent snapshot and
	// follows it until the lag is small, then moves the row to ToCutOver; or
	// (mode auto, online impossible) to ToDump, or to SyncFailed. The stream
	// keeps running in the servers after the step ends.
	Syncing Status = "Syncing"
	// SyncFailed: the sync step gave up. An operator retries or rolls back.
	SyncFailed Status = "Sync failed"
	// ToCutOver: the stream has caught up; waiting for the destination's cutover
	// agent.
	ToCutOver Status = "To cut over"
	// CuttingOver: claimed by the destination's cutover agent: it has the
	// source's agent block writes (a peer ask),
	// records the source's position, waits (bounded) until the destination
	// applied it, stops the stream, sets the sequences and verifies, then
	// moves the row to DNSToUpdate (ToCloseSource without a DNS name). A
	// catch-up that times out restores writes and is retried; after the
	// attempt limit, CutoverFailed.
	CuttingOver Status = "Cutting over"
	// CutoverFailed: the cutover gave up (writes restored). An operator
	// retries or rolls back.
	CutoverFailed Status = "Cutover failed"
	// ToDump: promoted, waiting for the destination's dump agent to claim
	// it: the destination takes a row only when it has a slot to import
	// it, so writes are never blocked for a queue.
	ToDump Status = "To dump"
	// Dumping: claimed by the destination's dump agent, which blocks writes
	// at the source, dumps it from there into the store and imports the same
	// bytes as they come, then verifies: it moves the row to DNSToUpdate
	// (ToCloseSource without a DNS name); to ToImport when the dump is
	// stored but the import beside it failed (the import step retries from
	// the store); or to DumpFailed (restoring writes at the source and
	// dropping the partial import first), or gives it back to ToDump. The
	// rescuer takes it back when the agent's lease expires.
	Dumping Status = "Dumping"
	// DumpFailed: the dump step gave up. An operator retries it (ToDump) or
	// rolls it back (ToRollBack). Failed rows hold their scheduler slot.
	DumpFailed Status = "Dump failed"
	// ToImport: the dump is stored; waiting for the destination's import agent.
	ToImport Status = "To import"
	// Importing: claimed by the destination's import agent, which moves it to
	// DNSToUpdate (or straight to ToCloseSource when the row has no DNS name),
	// or to ImportFailed. The rescuer takes it back when the lease expires.
	Importing Status = "Importing"
	// ImportFailed: the import step gave up. An operator retries or rolls back.
	ImportFailed Status = "Import failed"
	// DNSToUpdate: imported and verified; waiting for the DNS agent.
	DNSToUpdate Status = "DNS to update"
	// UpdatingDNS: claimed by the DNS agent, which moves it to ToCloseSource or
	// DNSFailed. The rescuer takes it back when the lease expires.
	UpdatingDNS Status = "Updating DNS"
	// DNSFailed: the DNS step gave up. An operator retries or rolls back.
	DNSFailed Status = "DNS failed"
	// ToCloseSource: customers now reach the destination; waiting for the
	// source's close agent.
	ToCloseSource Status = "To close source"
	// ClosingSource: claimed by the source's close agent, which moves it to Done
	// or CloseFailed. The rescuer takes it back when the lease expires.
	ClosingSource Status = "Closing source"
	// CloseFailed: closing the source gave up. An operator retries it.
	CloseFailed Status = "Close failed"
	// Done: migrated, verified and switched. Nobody moves it again.
	Done Status = "Done"
	// ToRollBack: an operator asked for a rollback; waiting for the source's
	// rollback agent.
	ToRollBack Status = "To roll back"
	// RollingBack: claimed by the source's rollback agent, which moves it to
	// RolledBack or RollbackFailed. The rescuer takes it back when the lease
	// expires.
	RollingBack Status = "Rolling back"
	// RollbackFailed: the rollback gave up; the row's last_error says what is
	// left to do. An operator retries it (ToRollBack). Not in the original
	// design, which had no way out of a failing rollback.
	RollbackFailed Status = "Rollback failed"
	// RolledBack: the source serves the database again and the destination copy
	// is gone. Nobody moves it again.
	RolledBack Status = "Rolled back"
	// Cancelled: an operator cancelled the row before it started. Nobody moves
	// it again.
	Cancelled Status = "Cancelled"
)

// Statuses lists every status in display order.
var Statuses = []Status{
	Waiting,
	ToSync, Syncing, SyncFailed,
	ToCutOver, CuttingOver, CutoverFailed,
	ToDump, Dumping, DumpFailed,
	ToImport, Importing, ImportFailed,
	DNSToUpdate, UpdatingDNS, DNSFailed,
	ToCloseSource, ClosingSource, CloseFailed,
	Done,
	ToRollBack, RollingBack, RollbackFailed, RolledBack,
	Cancelled,
}

// Valid reports whether s is one of the statuses above.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if v == s {
			return true
		}
	}
	return false
}

// Terminal reports whether nobody ever moves a row out of s.
func (s Status) Terminal() bool {
	return s == Done || s == RolledBack || s == Cancelled
}

// InFlight reports whether a row in s occupies one of the scheduler's slots:
// every status except Waiting and the terminal ones. Failed rows count, so
// failures hold their slot until an operator acts.
func (s Status) InFlight() bool {
	return s != Waiting && !s.Terminal()
}

// Working reports whether s is a status in which an agent holds the row under
// a lease (owner, lease_until and fence are set).
func (s Status) Working() bool {
	_, ok := stepByWorking(s)
	return ok
}

// Streams reports whether a row in status s has an online stream that is
// meant to exist (To sync, Syncing, To cut over, Cutting over): in any
// other status nothing of its stream may be left.
func (s Status) Streams() bool {
	switch s {
	case ToSync, Syncing, ToCutOver, CuttingOver:
		return true
	}
	return false
}

// Failed reports whether s is one of the "X failed" statuses.
func (s Status) Failed() bool {
	for _, st := range Steps {
		if st.Failed == s {
			return true
		}
	}
	return false
}

// InFlightStatuses returns the statuses for which InFlight is true.
func InFlightStatuses() []Status {
	var out []Status
	for _, s := range Statuses {
		if s.InFlight() {
			out = append(out, s)
		}
	}
	return out
}

// Mode is how a row moves its data.
type Mode string

// The modes.
const (
	// ModeDump: block writes, dump, import, verify, switch.
	ModeDump Mode = "dump"
	// ModeOnline: copy from a snapshot and stream the changes while the
	// source serves writes; block only for the cutover.
	ModeOnline Mode = "online"
	// ModeAuto: online where both servers can do it and the database is
	// large enough to gain from it; dump otherwise. The sync step decides
	// and records the mode it chose.
	ModeAuto Mode = "auto"
)

// Modes lists the modes.
var Modes = []Mode{ModeDump, ModeOnline, ModeAuto}

// ParseMode reads a mode name (case-insensitive, trimmed).
func ParseMode(s string) (Mode, error) {
	m := Mode(strings.ToLower(strings.TrimSpace(s)))
	for _, v := range Modes {
		if v == m {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown mode %q: want dump, online or auto", s)
}

// FirstStatus is where the scheduler promotes a Waiting row of mode m:
// the online path (ToSync) for modes that may stream, ToDump otherwise.
func (m Mode) FirstStatus() Status {
	if m == ModeOnline || m == ModeAuto {
		return ToSync
	}
	return ToDump
}
