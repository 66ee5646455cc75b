package demo

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// PeerCount is what the run shows of least privilege between servers
// (issue 33, part 4): what the MariaDB servers counted of the read-only
// peer account (their USER_STATISTICS, not our clients), what the
// PostgreSQL servers logged of the read-only peer role (their connection
// and error logs), and the peer asks the agents answered — every change at
// a server made by its own agent.
type PeerCount struct {
	Servers int
	// Sessions, RowsChanged and Denied are the peer account's, summed over
	// the MariaDB servers: its connections, rows it inserted, updated or
	// deleted, and its commands and logins refused.
	Sessions, RowsChanged, Denied int64
	// PGServers, PGSessions and PGRefused are the peer role's at the
	// PostgreSQL servers, from their logs: its sessions (replication ones
	// included) and its statements and logins refused (no privilege, a
	// write in its read-only sessions, a failed login).
	PGServers             int
	PGSessions, PGRefused int64
	// Asks counts the answered peer asks by action; AskErrors those
	// answered with an error.
	Asks      map[string]int
	AskErrors int
	Err       error
}

// OK: the peer account changed nothing and was refused nothing.
func (c PeerCount) OK() bool {
	return c.Err == nil && c.RowsChanged == 0 && c.Denied == 0 && c.PGRefused == 0
}

// countPeers reads the peer account's statistics at every MariaDB server
// and the asks of the state table.
func (d *Demo) countPeers(ctx context.Context) PeerCount {
	c := PeerCount{Asks: map[string]int{}}
	for _, h := range d.Fleet.Hosts {
		if h.my == nil {
			continue
		}
		db, err := sql.Open("mysql", h.my.DSN(""))
		if err != nil {
			c.Err = err
			return c
		}
		var sessions, ins, upd, del, denied, accessDenied int64
		err = db.QueryRowContext(ctx, "SELECT TOTAL_CONNECTIONS, ROWS_INSERTED, ROWS_UPDATED, ROWS_DELETED, DENIED_CONNECTIONS, ACCESS_DENIED FROM information_schema.USER_STATISTICS WHERE USER = ?",
			d.Fleet.PeerUser).Scan(&sessions, &ins, &upd, &del, &denied, &accessDenied)
		db.Close()
		switch {
		case errors.Is(err, sql.ErrNoRows): // never used there (a destination only)
		case err != nil:
			c.Err = fmt.Errorf("read the peer account's statistics at %s: %w", h.ID, err)
			return c
		}
		c.Servers++
		c.Sessions += sessions
		c.RowsChanged += ins + upd + del
		c.Denied += denied + accessDenied
	}
	for _, h := range d.Fleet.Hosts {
		if h.pg == nil {
			continue
		}
		sessions, refused, err := countPGPeer(filepath.Join(h.pg.Dir, "postgres.log"), d.Fleet.PeerUser)
		if err != nil {
			c.Err = fmt.Errorf("read the peer role's sessions at %s: %w", h.ID, err)
			return c
		}
		c.PGServers++
		c.PGSessions += sessions
		c.PGRefused += refused
	}
	rows, err := d.Store.DB().QueryContext(ctx, "SELECT action, error FROM migration_ask WHERE answered_at IS NOT NULL")
	if err != nil {
		c.Err = fmt.Errorf("read the peer asks: %w", err)
		return c
	}
	defer rows.Close()
	for rows.Next() {
		var action, errText string
		if err := rows.Scan(&action, &errText); err != nil {
			c.Err = err
			return c
		}
		c.Asks[action]++
		if errText != "" {
			c.AskErrors++
		}
	}
	if err := rows.Err(); err != nil {
		c.Err = err
	}
	return c
}

// pgRefusals are the SQLSTATEs of a refusal: no privilege, a write in a
// read-only transaction, a login refused.
var pgRefusals = []string{"42501", "25006", "28P01", "28000"}

// countPGPeer counts in a PostgreSQL server's log (log_connections, and
// the prefix pgLogPrefix) the sessions of role and its refusals.
func countPGPeer(path, role string) (sessions, refused int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	authorized := "connection authorized: user=" + role + " "
	who := " " + role + "@"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, authorized) {
			sessions++
			continue
		}
		if !strings.Contains(line, who) && !strings.Contains(line, `user "`+role+`"`) {
			continue
		}
		for _, code := range pgRefusals {
			if strings.Contains(line, " "+code+" ") {
				refused++
				break
			}
		}
	}
	return sessions, refused, sc.Err()
}

func (c PeerCount) print(w io.Writer) {
	label := "peers:              "
	if c.Err != nil {
		fmt.Fprintf(w, "%scould not be counted: %v\n", label, c.Err)
		return
	}
	verdict := "it changed nothing and was refused nothing"
	if !c.OK() {
		verdict = fmt.Sprintf("it CHANGED %d rows and was REFUSED %d times", c.RowsChanged, c.Denied)
	}
	pg := ""
	if c.PGServers > 0 {
		pgVerdict := "read-only sessions, refused nothing"
		if c.PGRefused > 0 {
			pgVerdict = fmt.Sprintf("REFUSED %d times", c.PGRefused)
		}
		pg = fmt.Sprintf("; %d sessions of the read-only peer role at the %d PostgreSQL servers, %s (counted at the servers: their logs)", c.PGSessions, c.PGServers, pgVerdict)
	}
	var asks []string
	for _, a := range []string{"plan-block", "block", "unblock", "publish", "stream-remove", "drop-copy"} {
		if n := c.Asks[a]; n > 0 {
			asks = append(asks, fmt.Sprintf("%d %s", n, a))
		}
	}
	if len(asks) == 0 {
		asks = []string{"none"}
	}
	fmt.Fprintf(w, "%s%d sessions of the read-only peer account at the %d MariaDB servers, %s (counted at the servers: USER_STATISTICS)%s; changes at a server made by its own agent, asked: %s (%d answered with an error)\n",
		label, c.Sessions, c.Servers, verdict, pg, strings.Join(asks, ", "), c.AskErrors)
}
