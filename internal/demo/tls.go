package demo

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
)

// TLSCount is what the MariaDB servers counted of the connections made to
// them during the run: Sessions (their Connections status: every
// connection attempt, TCP or not, accepted or refused) and Encrypted
// (Ssl_accepts: those that began TLS). Counted at the servers, not by
// our clients: a connection of ours, a tool's or a customer's without TLS
// shows as the difference (and is refused: the servers require TLS).
type TLSCount struct {
	Servers             int
	Sessions, Encrypted int64
	Err                 error
}

// Plaintext is the connections that did not use TLS.
func (c TLSCount) Plaintext() int64 { return c.Sessions - c.Encrypted }

// tlsCounters reads one MariaDB server's counters.
func tlsCounters(ctx context.Context, h *Host) (sessions, encrypted int64, err error) {
	db, err := sql.Open("mysql", h.my.DSN(""))
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Ssl_accepts')")
	if err != nil {
		return 0, 0, fmt.Errorf("read the connection counters of %s: %w", h.ID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, v string
		if err := rows.Scan(&name, &v); err != nil {
			return 0, 0, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s at %s: %q is not a number", name, h.ID, v)
		}
		if name == "Connections" {
			sessions = n
		} else {
			encrypted = n
		}
	}
	return sessions, encrypted, rows.Err()
}

// tlsBaseline records every MariaDB server's counters before the run.
func (d *Demo) tlsBaseline(ctx context.Context) error {
	d.tlsBase = map[string][2]int64{}
	for _, h := range d.Fleet.Hosts {
		if h.my == nil {
			continue
		}
		s, e, err := tlsCounters(ctx, h)
		if err != nil {
			return err
		}
		d.tlsBase[h.ID] = [2]int64{s, e}
	}
	return nil
}

// countTLS is what every MariaDB server counted since tlsBaseline.
func (d *Demo) countTLS(ctx context.Context) TLSCount {
	var c TLSCount
	if d.tlsBase == nil {
		c.Err = fmt.Errorf("no baseline")
		return c
	}
	for _, h := range d.Fleet.Hosts {
		base, ok := d.tlsBase[h.ID]
		if h.my == nil || !ok {
			continue
		}
		s, e, err := tlsCounters(ctx, h)
		if err != nil {
			c.Err = err
			return c
		}
		c.Servers++
		c.Sessions += s - base[0]
		c.Encrypted += e - base[1]
	}
	return c
}
