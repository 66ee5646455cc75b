// Command migrate-agent is the daemon that runs on every database server
// (--roles dump,import,close) and on the DNS host (--roles dns): it claims
// rows from the state table, does the work and hands them on. See
// internal/agentcmd for the command and agent for the runtime.
package main

import (
	"os"
	"runtime/debug"

	"github.com/fleetmigrate/fleetmigrate/agent"
	"github.com/fleetmigrate/fleetmigrate/internal/agentcmd"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(agentcmd.Main(os.Args[1:], versionString(), os.Stdout, os.Stderr, registerHandlers))
}

// registerHandlers adds the step handlers this build has. The engine,
// storage and DNS steps arrive with their issues; until then the agent
// registers, heartbeats and recovers, and leaves rows it cannot handle
// alone, saying so once per engine.
func registerHandlers(*agent.Agent, config.Config) error { return nil }

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
