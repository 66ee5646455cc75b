package demo

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/internal/ident"
)

// Baseline is the time one tool users would otherwise use took to copy a
// database from its source to a scratch database on its destination server
// (same servers, same data, before the migration).
type Baseline struct {
	Database string
	Tool     string
	Took     time.Duration
	Bytes    int64 // the database's size, for the rate
	Err      error
}

// MBps is the database's size divided by the time.
func (b Baseline) MBps() float64 {
	if b.Took <= 0 {
		return 0
	}
	return float64(b.Bytes) / (1 << 20) / b.Took.Seconds()
}

// Baselines copies each database with the comparison tools: MariaDB:
// `mariadb-dump | mariadb`, mydumper + myloader with 2 and 4 threads;
// PostgreSQL: `pg_dump | psql`, `pg_dump -Fd -j2 -Z0` + `pg_restore -j2`,
// `pgcopydb clone` with 2 table and 2 index jobs. None of them copies the
// accounts (roles are left out on PostgreSQL: --no-owner --no-acl), blocks
// writes, stores a dump or verifies anything; the scratch copies are
// dropped after each.
func (d *Demo) Baselines(ctx context.Context, sizes map[string]int64) []Baseline {
	var out []Baseline
	for _, db := range d.DBs {
		src, dst := d.Fleet.Host(db.Source), d.Fleet.Host(db.Destination)
		work := filepath.Join(d.Opt.Dir, "baseline")
		run := func(tool string, fn func(scratch string) error, drop func(scratch string) error) {
			scratch := "baseline_copy"
			_ = os.RemoveAll(work)
			_ = os.MkdirAll(work, 0o700)
			t0 := time.Now()
			err := fn(scratch)
			b := Baseline{Database: db.Name, Tool: tool, Took: time.Since(t0), Bytes: sizes[db.Name], Err: err}
			if derr := drop(scratch); derr != nil && err == nil {
				b.Err = fmt.Errorf("drop the scratch copy: %w", derr)
			}
			d.say("baseline %-40s %-28s %8s  %6.1f MB/s%s", fmt.Sprintf("%q", db.Name), tool, b.Took.Round(10*time.Millisecond), b.MBps(), errSuffix(b.Err))
			out = append(out, b)
		}
		switch db.Engine {
		case MySQL:
			// The fleet's servers require TLS (the comparison is with
			// the tools as a user would run them there).
			my := func(h *Host) string {
				return fmt.Sprintf("-h%s -P%d -uroot --ssl --skip-ssl-verify-server-cert", h.IP, h.Port)
			}
			create := func(s string) error {
				return execMySQL(ctx, dst.my.DSN(""), "CREATE DATABASE "+ident.QuoteMySQL(s))
			}
			drop := func(s string) error {
				return execMySQL(ctx, dst.my.DSN(""), "DROP DATABASE IF EXISTS "+ident.QuoteMySQL(s))
			}
			run("mariadb-dump | mariadb", func(s string) error {
				if err := create(s); err != nil {
					return err
				}
				return shell(ctx, nil, fmt.Sprintf("mariadb-dump %s --single-transaction --quick --routines --triggers --hex-blob %s | mariadb %s %s",
					my(src), shellQuote(db.Name), my(dst), shellQuote(s)))
			}, drop)
			for _, threads := range []int{2, 4} {
				run(fmt.Sprintf("mydumper + myloader -t %d", threads), func(s string) error {
					dir := filepath.Join(work, "dump")
					if err := shell(ctx, nil, fmt.Sprintf("mydumper -h %s -P %d -u root --ssl -B %s -t %d -o %s",
						src.IP, src.Port, shellQuote(db.Name), threads, shellQuote(dir))); err != nil {
						return err
					}
					return shell(ctx, nil, fmt.Sprintf("myloader -h %s -P %d -u root --ssl -d %s -s %s -B %s -t %d -o",
						dst.IP, dst.Port, shellQuote(dir), shellQuote(db.Name), shellQuote(s), threads))
				}, drop)
			}
		case Postgres:
			bin, err := fleettest.PostgresBinDir()
			if err != nil {
				out = append(out, Baseline{Database: db.Name, Tool: "PostgreSQL tools", Err: err})
				continue
			}
			env := []string{"PGPASSWORD=" + d.Fleet.AdminPassword}
			conn := func(h *Host, name string) string {
				return shellQuote(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=require", h.IP, h.Port, d.Fleet.AdminUser, pgConnValue(name)))
			}
			uri := func(h *Host, name string) string {
				return shellQuote(fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=require", d.Fleet.AdminUser, h.IP, h.Port, urlPath(name)))
			}
			create := func(s string) error {
				return execPG(ctx, dst.pg.DSN("postgres"), "CREATE DATABASE "+ident.QuotePostgres(s))
			}
			drop := func(s string) error {
				return execPG(ctx, dst.pg.DSN("postgres"), "DROP DATABASE IF EXISTS "+ident.QuotePostgres(s)+" WITH (FORCE)")
			}
			run("pg_dump | psql", func(s string) error {
				if err := create(s); err != nil {
					return err
				}
				return shell(ctx, env, fmt.Sprintf("%s/pg_dump --no-owner --no-acl -d %s | %s/psql -q -v ON_ERROR_STOP=1 -d %s >/dev/null",
					bin, conn(src, db.Name), bin, conn(dst, s)))
			}, drop)
			run("pg_dump -Fd -j2 + pg_restore -j2", func(s string) error {
				if err := create(s); err != nil {
					return err
				}
				dir := filepath.Join(work, "fd")
				if err := shell(ctx, env, fmt.Sprintf("%s/pg_dump -Fd -j2 -Z0 --no-owner --no-acl -f %s -d %s", bin, shellQuote(dir), conn(src, db.Name))); err != nil {
					return err
				}
				return shell(ctx, env, fmt.Sprintf("%s/pg_restore -j2 --no-owner --no-acl -d %s %s", bin, conn(dst, s), shellQuote(dir)))
			}, drop)
			run("pgcopydb clone (2+2 jobs)", func(s string) error {
				if err := create(s); err != nil {
					return err
				}
				return shell(ctx, append(env, "PGCOPYDB_SOURCE_PGURI=", "PGCOPYDB_TARGET_PGURI="), fmt.Sprintf(
					"pgcopydb clone --source %s --target %s --table-jobs 2 --index-jobs 2 --no-owner --no-acl --skip-extensions --dir %s",
					uri(src, db.Name), uri(dst, s), shellQuote(filepath.Join(work, "pgcopydb"))))
			}, drop)
		}
	}
	_ = os.RemoveAll(filepath.Join(d.Opt.Dir, "baseline"))
	return out
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return "  FAILED: " + err.Error()
}

// shell runs a pipeline with bash (pipefail); its output's tail is the
// error.
func shell(ctx context.Context, env []string, script string) error {
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -o pipefail; "+script)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, tail(string(out), 5))
	}
	return nil
}

// pgConnValue quotes a libpq keyword value.
func pgConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func execMySQL(ctx context.Context, dsn string, stmts ...string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func urlPath(s string) string { return url.PathEscape(s) }

// Sizes returns each database's size at its source as the engine counts
// it (MariaDB: data + indexes; PostgreSQL: pg_database_size).
func (d *Demo) Sizes(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for _, db := range d.DBs {
		h := d.Fleet.Host(db.Source)
		var n int64
		switch db.Engine {
		case MySQL:
			c, err := sql.Open("mysql", h.my.DSN(""))
			if err != nil {
				return nil, err
			}
			// Fresh statistics first: after a bulk load InnoDB's are far off.
			tables, err := baseTables(ctx, c, db.Name)
			if err == nil && len(tables) > 0 {
				_, err = c.ExecContext(ctx, "ANALYZE TABLE "+strings.Join(tables, ", "))
			}
			if err == nil {
				err = c.QueryRowContext(ctx, "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables WHERE table_schema = ?", db.Name).Scan(&n)
			}
			c.Close()
			if err != nil {
				return nil, err
			}
		case Postgres:
			c, err := pgx.Connect(ctx, h.pg.DSN("postgres"))
			if err != nil {
				return nil, err
			}
			err = c.QueryRow(ctx, "SELECT pg_database_size($1)", db.Name).Scan(&n)
			c.Close(context.WithoutCancel(ctx))
			if err != nil {
				return nil, err
			}
		}
		out[db.Name] = n
	}
	return out, nil
}

// agentsPeakRSS is the largest peak resident set (VmHWM) of the agents.
func (d *Demo) agentsPeakRSS() int64 {
	var peak int64
	for _, p := range d.agents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				var kb int64
				if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb); err != nil {
					continue
				}
				peak = max(peak, kb<<10)
			}
		}
	}
	return peak
}

// baseTables lists a MariaDB database's tables, quoted for ANALYZE TABLE.
func baseTables(ctx context.Context, c *sql.DB, database string) ([]string, error) {
	rows, err := c.QueryContext(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'", database)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, ident.QuoteMySQL(database)+"."+ident.QuoteMySQL(t))
	}
	return out, rows.Err()
}
