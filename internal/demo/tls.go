package demo

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// TLSCount is what the database servers counted of the connections made
// to them during the run. MariaDB's, from their own status counters and error logs (not
// from our clients): Connections (every connection, accepted or refused),
// Ssl_accepts (those that began TLS) and Aborted_connects (those closed
// before logging in: a dial cancelled by its caller, a refused login).
// The servers require TLS: a connection without it cannot log in, and its
// refusal is in the server's error log (Refused).
type TLSCount struct {
	Servers                      int
	Sessions, Encrypted, Aborted int64
	// Refused are the error-log lines of logins the servers refused
	// during the run (a client without TLS is refused so).
	Refused []string
	// PGServers (the fleet's PostgreSQL servers and the state database)
	// logged PGSessions sessions ("connection authorized", replication
	// ones too), PGEncrypted of them with SSL.
	PGServers               int
	PGSessions, PGEncrypted int64
	Err                     error
}

// Plaintext is the connections that did not begin TLS.
func (c TLSCount) Plaintext() int64 { return c.Sessions - c.Encrypted }

// OK reports whether no session went without TLS: every connection that
// did not begin TLS closed before logging in, and no login was refused.
func (c TLSCount) OK() bool {
	return c.Err == nil && len(c.Refused) == 0 && c.Plaintext() <= c.Aborted && c.PGEncrypted == c.PGSessions
}

// pgSessions counts the sessions a PostgreSQL server logged from offset
// on, and those with SSL.
func pgSessions(path string, offset int64) (sessions, encrypted int64, err error) {
	err = logLinesSince(path, offset, func(l string) {
		if strings.Contains(l, "connection authorized: ") {
			sessions++
			if strings.Contains(l, "SSL enabled") {
				encrypted++
			}
		}
	})
	return sessions, encrypted, err
}

// logLinesSince calls fn with each line a server's log gained after
// offset (its size before the run).
func logLinesSince(path string, offset int64, fn func(line string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	return sc.Err()
}

// pgLogs are the logs of the PostgreSQL servers whose sessions are
// counted: the fleet's and the state database's.
func (d *Demo) pgLogs() map[string]string {
	logs := map[string]string{"state database": d.Fleet.State.LogFile()}
	for _, h := range d.Fleet.Hosts {
		if h.pg != nil {
			logs[h.ID] = h.pg.LogFile()
		}
	}
	return logs
}

// tlsStatus is one server's counters and the size of its error log.
type tlsStatus struct {
	sessions, encrypted, aborted int64
	logSize                      int64
}

// tlsCounters reads one MariaDB server's counters.
func tlsCounters(ctx context.Context, h *Host) (tlsStatus, error) {
	var st tlsStatus
	if fi, err := os.Stat(h.my.ErrorLog()); err == nil {
		st.logSize = fi.Size()
	}
	db, err := sql.Open("mysql", h.my.DSN(""))
	if err != nil {
		return st, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Ssl_accepts', 'Aborted_connects')")
	if err != nil {
		return st, fmt.Errorf("read the connection counters of %s: %w", h.ID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, v string
		if err := rows.Scan(&name, &v); err != nil {
			return st, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return st, fmt.Errorf("%s at %s: %q is not a number", name, h.ID, v)
		}
		switch name {
		case "Connections":
			st.sessions = n
		case "Ssl_accepts":
			st.encrypted = n
		case "Aborted_connects":
			st.aborted = n
		}
	}
	return st, rows.Err()
}

// tlsBaseline records every server's counters before the run.
func (d *Demo) tlsBaseline(ctx context.Context) error {
	d.tlsBase = map[string]tlsStatus{}
	for id, path := range d.pgLogs() {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("the log of %s: %w", id, err)
		}
		d.tlsBase["pg "+id] = tlsStatus{logSize: fi.Size()}
	}
	for _, h := range d.Fleet.Hosts {
		if h.my == nil {
			continue
		}
		st, err := tlsCounters(ctx, h)
		if err != nil {
			return err
		}
		d.tlsBase[h.ID] = st
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
	for id, path := range d.pgLogs() {
		base, ok := d.tlsBase["pg "+id]
		if !ok {
			continue
		}
		n, e, err := pgSessions(path, base.logSize)
		if err != nil {
			c.Err = fmt.Errorf("read the log of %s: %w", id, err)
			return c
		}
		c.PGServers++
		c.PGSessions += n
		c.PGEncrypted += e
	}
	for _, h := range d.Fleet.Hosts {
		base, ok := d.tlsBase[h.ID]
		if h.my == nil || !ok {
			continue
		}
		st, err := tlsCounters(ctx, h)
		if err != nil {
			c.Err = err
			return c
		}
		c.Servers++
		c.Sessions += st.sessions - base.sessions
		c.Encrypted += st.encrypted - base.encrypted
		c.Aborted += st.aborted - base.aborted
		refused, err := refusedLogins(h.my.ErrorLog(), base.logSize)
		if err != nil {
			c.Err = fmt.Errorf("read the error log of %s: %w", h.ID, err)
			return c
		}
		for _, l := range refused {
			c.Refused = append(c.Refused, h.ID+": "+l)
		}
	}
	return c
}

// refusedLogins returns the refused logins in an error log from offset on.
func refusedLogins(path string, offset int64) ([]string, error) {
	var out []string
	err := logLinesSince(path, offset, func(l string) {
		// A refused login ("Access denied for user 'u'@'h' (using
		// password: YES)"), not a session refused a database ("… to
		// database 'd'": a closed source does that by design).
		if strings.Contains(l, "Access denied for user") && strings.Contains(l, "(using password:") {
			out = append(out, l)
		}
	})
	return out, err
}

// print writes the summary's TLS lines.
func (c TLSCount) print(w io.Writer) {
	label := "TLS:                "
	if c.Err != nil {
		fmt.Fprintf(w, "%scould not be counted: %v\n", label, c.Err)
		return
	}
	if c.Servers > 0 {
		verdict := "all of them"
		if p := c.Plaintext(); p > 0 {
			verdict = fmt.Sprintf("the %d others sent no login (closed by their caller first: no login without TLS was refused, none can succeed)", p)
			if len(c.Refused) > 0 || p > c.Aborted {
				verdict = fmt.Sprintf("%d WITHOUT TLS, %d refused logins (listed below)", p, len(c.Refused))
			}
		}
		fmt.Fprintf(w, "%s%d/%d connections to the %d MariaDB servers used TLS, %s; counted at the servers (Ssl_accepts / Connections), which require it\n",
			label, c.Encrypted, c.Sessions, c.Servers, verdict)
		label = strings.Repeat(" ", len(label))
	}
	if c.PGServers > 0 {
		verdict := "all of them"
		if p := c.PGSessions - c.PGEncrypted; p > 0 {
			verdict = fmt.Sprintf("%d WITHOUT TLS", p)
		}
		fmt.Fprintf(w, "%s%d/%d sessions at the %d PostgreSQL servers (the fleet's and the state database) used TLS, %s; counted from their connection logs\n",
			label, c.PGEncrypted, c.PGSessions, c.PGServers, verdict)
	}
	for i, l := range c.Refused {
		if i == 10 {
			fmt.Fprintf(w, "  refused:  … and %d more (the servers' error logs)\n", len(c.Refused)-i)
			break
		}
		fmt.Fprintf(w, "  refused:  %s\n", l)
	}
}
