// Package agent is the runtime of migrate-agent: a jittered poll loop per
// role that claims rows under a lease, renews it while a role handler works,
// and advances, fails or releases the row through the fenced Store.
package agent
