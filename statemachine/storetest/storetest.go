// Package storetest is the conformance suite for statemachine.Store. Every
// implementation runs it against a real database: Run(t, factory).
//
// Assertions read the state table back with plain SQL where they can, so a
// store cannot pass by reporting success it did not write.
package storetest

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// Harness is one fresh, upgraded, empty state database.
type Harness struct {
	// Store is open on the database with the database's clock.
	Store statemachine.Store
	// DB is a plain connection to the same database for assertions.
	DB *sql.DB
	// Open opens another store on the same database with its own connection
	// pool; now, when not nil, pins its clock.
	Open func(t *testing.T, now func() time.Time) statemachine.Store
	// Q rebinds a statement written with ? placeholders for the dialect.
	Q func(string) string
	// AsAgent grants host an agent login of its own (with the DNS rows
	// when dns is set) and returns a store and a plain connection that log
	// in as it.
	AsAgent func(t *testing.T, host string, dns bool) (statemachine.Store, *sql.DB)
}

// Factory returns a Harness on a database of its own for t.
type Factory func(t *testing.T) Harness

// Clock is a pinned, movable clock for stores opened with Harness.Open.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock pinned at a fixed instant with microsecond
// precision (what the databases store).
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)}
}

// Now returns the pinned time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Run runs the whole suite; each test gets a fresh database from f.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"SchemaMatchesStateMachine", testSchemaMatchesStateMachine},
		{"DatabaseRefusesTransitionsOutsideTheTable", testDatabaseRefusesInvalidTransitions},
		{"DatabaseRefusesRowsThatContradictTheirStatus", testDatabaseRefusesContradictions},
		{"PlanRoundTripsAwkwardNames", testPlanRoundTripsNames},
		{"PlanRefusesConflictsAndInsertsNothing", testPlanConflicts},
		{"PlanDryRunInsertsNothing", testPlanDryRun},
		{"LifecycleThroughEveryStep", testLifecycle},
		{"LifecycleWithoutDNSName", testLifecycleWithoutDNS},
		{"ClaimOnlyOwnHostsRows", testClaimScope},
		{"ClaimRace32Workers500Rows", testClaimRace},
		{"RescuedWorkerCannotTouchRow", testFenceAfterRescue},
		{"RescueGivesUpAfterAttemptLimit", testRescueAttemptLimit},
		{"RenewExtendsLeaseUntilExpired", testRenew},
		{"FailReleaseAndRecord", testFailReleaseRecord},
		{"OperatorActions", testOperatorActions},
		{"PromoteInPlanOrderNeverTwice", testPromote},
		{"PromoteFairIsFencedByLeaseAndStopSwitch", testPromoteFairIsFenced},
		{"PromoteFairOffersCandidatesByCapPauseAndOrder", testPromoteFairState},
		{"PromoteFairRaceNeverExceedsMax", testPromoteFairRace},
		{"WindowStatsPausesAndCounts", testWindowStats},
		{"StopSwitch", testStopSwitch},
		{"LeaderLease", testLeaderLease},
		{"LeaderLeaseRace", testLeaderLeaseRace},
		{"LeaderTakeOver", testLeaderTakeOver},
		{"AgentRegistryIsALeaseOnTheHostID", testAgents},
		{"ClaimByEngineNoteRetryRescueHost", testClaimEnginesRetryAndRescueHost},
		{"RescueGoneOwner", testRescueGoneOwner},
		{"ExpireDumpOfFinishedRowsOnly", testExpireDump},
		{"StepRecordsAreFencedAndOutliveTheClaim", testRecords},
		{"TTLRecordsKeepTheOriginal", testTTLRecords},
		{"UnswitchOnlyUnclaimedRollbackableRows", testUnswitch},
		{"OnlinePathThroughSyncAndCutover", testOnlinePath},
		{"AgentTransitionsMatchTheSteps", testAgentPairsMatchSteps},
		{"AgentLoginMovesItsOwnRowsThroughEveryStep", testAgentLoginsWalkTheirRows},
		{"AgentLoginRefusedOtherHostsRows", testAgentLoginRefusedOtherRows},
		{"AgentLoginRefusedGuardedColumnsAndOtherSteps", testAgentLoginRefusedColumnsAndSteps},
		{"AgentLoginRefusedOtherHostsRegistry", testAgentLoginRefusedRegistry},
		{"AgentLoginRefusedOperatorsTables", testAgentLoginRefusedOperatorTables},
		{"PeerAsksOnlyFromTheHolderAnsweredOnceByTheAskedHost", testPeerAsks},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, f(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}
