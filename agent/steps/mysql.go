package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/engine"
	"github.com/fleetmigrate/fleetmigrate/engine/mysql"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

// MySQL runs the MySQL/MariaDB steps of one host: the steps of every
// engine (dump.go, online.go) over engine/mysql's driver, and MariaDB's
// change stream (online_mysql.go, mysql_streams.go).
type MySQL struct {
	Config
	// Options configure the engine (tools, session wait, temp dir).
	Options mysql.Options
}

// Register adds the sync, cutover, dump, import, close and rollback
// handlers for rows of engine mysql, and the service that runs this
// host's streams.
func (c *MySQL) Register(a *agent.Agent) {
	h := newHost(c.Config, mysql.Driver{Options: c.Options})
	st := &mysqlStreams{h: h}
	st.run = &mysqlStreamers{h: h, state: a.Store(), host: a.Host()}
	h.streams = st
	a.Service("mysql streams", st.run.run)
	h.register(a)
}

// mysqlStreams is MariaDB's change stream for the online steps: a copy
// piped from the source's dump tool, then a stream of our own that reads
// the source's binary log (online_mysql.go). Nothing of it is at the
// source: its record is at the destination.
type mysqlStreams struct {
	h   *host
	run *mysqlStreamers
}

func (m *mysqlStreams) record(ctx context.Context, job *agent.Job) (mysql.Stream, error) {
	return getRecord[mysql.Stream](ctx, job, recordStream)
}

func (m *mysqlStreams) recorded(ctx context.Context, job *agent.Job) (bool, error) {
	st, err := m.record(ctx, job)
	return st.Name != "", err
}

func (m *mysqlStreams) syncSide(ctx context.Context, job *agent.Job, src, dst engine.Conn) (syncSide, error) {
	st, err := m.record(ctx, job)
	return &mysqlSyncSide{m: m, h: m.h, job: job, srcConn: src, dstConn: dst, src: mysql.ServerOf(src), dst: mysql.ServerOf(dst), st: st}, err
}

func (m *mysqlStreams) cutoverSide(ctx context.Context, job *agent.Job, src, dst engine.Conn) (cutoverSide, error) {
	st, err := m.record(ctx, job)
	return &mysqlCutoverSide{m: m, h: m.h, job: job, src: mysql.ServerOf(src), dst: mysql.ServerOf(dst), st: st}, err
}

// teardown removes the row's recorded stream at the destination (its
// position record: its streamer, in the destination's agent, applies
// nothing more and stops); then the record says nothing is left.
func (m *mysqlStreams) teardown(ctx context.Context, job *agent.Job, _, dst engine.Conn) error {
	st, err := m.record(ctx, job)
	if err != nil || st.Name == "" {
		return err
	}
	if dst == nil {
		return fmt.Errorf("stream %s at %s not removed: destination unreachable", st.Name, job.Row.Destination)
	}
	if err := m.removeAt(ctx, statemachine.SideDestination, dst, st.Name, st.Database); err != nil {
		return err
	}
	return m.forget(ctx, job)
}

// removeAt removes a stream's part at one server: at the destination its
// position record (its streamer, when it runs in this agent, stops); the
// source holds nothing of it.
func (m *mysqlStreams) removeAt(ctx context.Context, side statemachine.HostSide, c engine.Conn, name, _ string) error {
	if side != statemachine.SideDestination {
		return nil
	}
	if err := mysql.ServerOf(c).RemoveStreamRecord(ctx, name); err != nil {
		return fmt.Errorf("remove the stream %s: %w", name, err)
	}
	m.run.stop(name) // when it runs in this agent
	return nil
}

// forget records that nothing of the row's stream is left (what was
// verified stays) and says so on the row.
func (m *mysqlStreams) forget(ctx context.Context, job *agent.Job) error {
	st, err := m.record(ctx, job)
	if err != nil || st.Name == "" {
		return err
	}
	if err := job.PutRecord(ctx, recordStream, mysql.Stream{Verified: st.Verified, VerifiedAt: st.VerifiedAt}); err != nil {
		return err
	}
	job.Note(ctx, "stream removed: %s at %s", st.Name, job.Row.Destination)
	return nil
}

// verifiedAtCut is what the cutover verified by checksums; the tables it
// verified by keys have none.
func (m *mysqlStreams) verifiedAtCut(ctx context.Context, job *agent.Job) ([]engine.TableSum, []string, error) {
	st, err := m.record(ctx, job)
	var verified []engine.TableSum
	for _, v := range st.Verified {
		verified = append(verified, v)
	}
	return verified, st.CutKeys, err
}

// writtenSinceCut finds a write to the source after the cutover in the
// tables the cutover verified by keys (their checksums were not taken
// then): a row event for them in the source's log after the cutover's
// position.
func (m *mysqlStreams) writtenSinceCut(ctx context.Context, job *agent.Job, c engine.Conn) error {
	done, err := m.record(ctx, job)
	if err != nil || len(done.CutKeys) == 0 {
		return err
	}
	src := mysql.ServerOf(c)
	now, err := src.BinlogNow(ctx)
	if err != nil {
		return err
	}
	changed, err := src.ChangedTables(ctx, job.Row.DatabaseName, done.CutKeys, done.VerifiedAt, now)
	if errors.Is(err, mysql.ErrLogPurged) {
		job.Note(ctx, "WARNING: cannot look for writes at the source after the cutover in %s (verified by keys, no checksum taken then): %v", strings.Join(done.CutKeys, ", "), err)
		return nil
	}
	if err != nil {
		return err
	}
	for _, t := range done.CutKeys {
		if changed[t] {
			return lateWrites(&job.Row, engine.Permanentf("rows of %s were written at the source after the cutover verified it (row events in its binary log after %s)", t, done.VerifiedAt))
		}
	}
	return nil
}
