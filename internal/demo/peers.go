package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
)

// PeerCount is what the run shows of least privilege between servers
// (issue 33, part 4): what the MariaDB servers counted of the read-only
// peer account (their USER_STATISTICS, not our clients), and the peer asks
// the agents answered — every change at a server made by its own agent.
type PeerCount struct {
	Servers int
	// Sessions, RowsChanged and Denied are the peer account's, summed over
	// the MariaDB servers: its connections, rows it inserted, updated or
	// deleted, and its commands and logins refused.
	Sessions, RowsChanged, Denied int64
	// Asks counts the answered peer asks by action; AskErrors those
	// answered with an error.
	Asks      map[string]int
	AskErrors int
	Err       error
}

// OK: the peer account changed nothing and was refused nothing.
func (c PeerCount) OK() bool { return c.Err == nil && c.RowsChanged == 0 && c.Denied == 0 }

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
	var asks []string
	for _, a := range []string{"plan-block", "block", "unblock", "stream-remove", "drop-copy"} {
		if n := c.Asks[a]; n > 0 {
			asks = append(asks, fmt.Sprintf("%d %s", n, a))
		}
	}
	if len(asks) == 0 {
		asks = []string{"none"}
	}
	fmt.Fprintf(w, "%s%d sessions of the read-only peer account at the %d MariaDB servers, %s (counted at the servers: USER_STATISTICS); changes at a server made by its own agent, asked: %s (%d answered with an error)\n",
		label, c.Sessions, c.Servers, verdict, strings.Join(asks, ", "), c.AskErrors)
}
