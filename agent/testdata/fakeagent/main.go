// fakeagent is migrate-agent (internal/agentcmd, the same wiring) with a
// fake handler for every role, for the agent's process tests. Its effects
// are files in $FAKEAGENT_DIR, named after the row:
//
//	<id>.effect     exists while a step's partial effect is in place (like
//	                writes blocked at a source); undone on cancel and by Recover
//	<id>.ran        one line per run of the step
//	<id>.cleanup    the step was cancelled and undid its effect
//	<id>.recovered  Recover ran for the row
//	<id>.abandoned  Abandon ran for the row (its attempts used up)
//
// $FAKEAGENT_MODE: noop (finish at once), block (wait until cancelled),
// slow (finish after $FAKEAGENT_SLEEP unless cancelled first).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/internal/agentcmd"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/statemachine"
)

type fake struct {
	mode, dir string
	sleep     time.Duration
}

func (f *fake) path(id int64, kind string) string {
	return filepath.Join(f.dir, fmt.Sprintf("%d.%s", id, kind))
}

func (f *fake) Run(ctx context.Context, job *agent.Job) (statemachine.Fields, error) {
	id := job.Row.ID
	appendLine(f.path(id, "ran"), fmt.Sprintf("pid %d attempt %d", os.Getpid(), job.Row.Attempt))
	_ = os.WriteFile(f.path(id, "effect"), nil, 0o644)
	job.Progress(ctx, "fake step for row %d", id)
	job.CountBytes("out", 1024)
	var wait <-chan time.Time
	switch f.mode {
	case "noop":
	case "slow":
		wait = time.After(f.sleep)
	default: // block
	}
	if f.mode != "noop" {
		select {
		case <-ctx.Done():
			_ = os.Remove(f.path(id, "effect"))
			_ = os.WriteFile(f.path(id, "cleanup"), nil, 0o644)
			return statemachine.Fields{}, ctx.Err()
		case <-wait:
		}
	}
	_ = os.Remove(f.path(id, "effect"))
	var fields statemachine.Fields
	if job.Row.Status == statemachine.Dumping {
		fields = statemachine.Fields{DumpURL: "file:///fake", DumpSHA256: "0000000000000000000000000000000000000000000000000000000000000000", DumpBytes: 1}
	}
	return fields, nil
}

func (f *fake) Recover(_ context.Context, job *agent.Job) error {
	_ = os.Remove(f.path(job.Row.ID, "effect"))
	job.Log.Info("fake recovery")
	return os.WriteFile(f.path(job.Row.ID, "recovered"), nil, 0o644)
}

func (f *fake) Abandon(_ context.Context, job *agent.Job) error {
	job.Log.Info("fake abandon")
	return os.WriteFile(f.path(job.Row.ID, "abandoned"), nil, 0o644)
}

func appendLine(path, line string) {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer fh.Close()
	fmt.Fprintln(fh, line)
}

func main() {
	sleep, _ := time.ParseDuration(os.Getenv("FAKEAGENT_SLEEP"))
	h := &fake{mode: os.Getenv("FAKEAGENT_MODE"), dir: os.Getenv("FAKEAGENT_DIR"), sleep: sleep}
	os.Exit(agentcmd.Main(os.Args[1:], "fake", os.Stdout, os.Stderr, func(a *agent.Agent, cfg config.Config) error {
		for _, r := range cfg.Agent.Roles {
			a.Handle(statemachine.Role(r), "", h)
		}
		return nil
	}))
}
