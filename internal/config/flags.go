package config

import (
	"errors"
	"flag"
	"net/url"
	"regexp"
	"strings"
)

// Flags are the command-line flags every command shares. Register them on a
// subcommand's FlagSet, parse, then Load.
type Flags struct {
	fs       *flag.FlagSet
	path     string
	host     string
	driver   string
	dsn      string
	logLevel string
}

// RegisterFlags adds --config, --host, --state-driver, --state-dsn and
// --log-level to fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.path, "config", "", "configuration file (default $FLEETMIGRATE_CONFIG, then "+DefaultPath+" if present)")
	fs.StringVar(&f.host, "host", "", "this machine's host ID in the state table (default: hostname)")
	fs.StringVar(&f.driver, "state-driver", "", "state database driver: postgres or mysql (default: from the DSN)")
	fs.StringVar(&f.dsn, "state-dsn", "", "state database DSN without a password (passwords go in the config file or $FLEETMIGRATE_STATE_DSN)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	return f
}

// Load reads the configuration, applies the environment and then the flags
// given on the command line, and validates the result.
func (f *Flags) Load() (Config, error) {
	cfg, err := Load(f.path)
	if err != nil {
		return cfg, err
	}
	var ferr error
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "host":
			cfg.Host = f.host
		case "state-driver":
			cfg.State.Driver = f.driver
		case "state-dsn":
			if HasPassword(f.dsn) {
				ferr = errors.New("--state-dsn contains a password, which every user of this machine can read in the process list: " +
					"put the DSN in the configuration file with the password as ${VARIABLE}, or in $FLEETMIGRATE_STATE_DSN")
			}
			cfg.State.DSN = f.dsn
		case "log-level":
			cfg.Log.Level = f.logLevel
		}
	})
	if ferr != nil {
		return cfg, ferr
	}
	return cfg, cfg.Validate()
}

var mysqlPassword = regexp.MustCompile(`^[^@/(]*:[^@]*@`)

// HasPassword reports whether a DSN carries a password.
func HasPassword(dsn string) bool {
	if strings.Contains(dsn, "://") {
		if u, err := url.Parse(dsn); err == nil && u.User != nil {
			_, ok := u.User.Password()
			return ok
		}
		return false
	}
	if strings.Contains(dsn, "password=") {
		return true
	}
	return mysqlPassword.MatchString(dsn)
}
