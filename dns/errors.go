package dns

import (
	"errors"
	"fmt"

	mdns "github.com/miekg/dns"
)

// Error is a failed exchange with a DNS server. Transient errors (an
// unreachable server, SERVFAIL, a timeout) are worth retrying; the others
// need a person.
type Error struct {
	// Op is what was being done: "update", "query", "confirm".
	Op     string
	Name   string
	Zone   string
	Server string
	// Rcode is the server's answer (-1: none).
	Rcode     int
	Msg       string
	Transient bool
	Err       error
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// MismatchError: the name does not hold what it was expected to hold, so
// it was not changed.
type MismatchError struct {
	Name     string
	Have     Target
	Expected Target
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("record %s points to %s, expected %s", show(e.Name), e.Have, e.Expected)
}

// prereqFailed reports whether rcode is an RFC 2136 prerequisite failure.
func prereqFailed(rcode int) bool {
	switch rcode {
	case mdns.RcodeNXRrset, mdns.RcodeYXRrset, mdns.RcodeNameError, mdns.RcodeYXDomain:
		return true
	}
	return false
}

// rcodeError explains a server's refusal of an update or a query.
func (u *Updater) rcodeError(op, name string, z Zone, server string, r *mdns.Msg) *Error {
	e := &Error{Op: op, Name: show(name), Zone: show(z.Name), Server: server, Rcode: r.Rcode}
	word := mdns.RcodeToString[r.Rcode]
	if t := r.IsTsig(); t != nil && t.Error != 0 {
		e.Rcode = int(t.Error)
		switch int(t.Error) {
		case mdns.RcodeBadSig:
			e.Msg = fmt.Sprintf("%s of %s refused by %s: TSIG verification failed (BADSIG) for %s: the server has a different secret for that key name",
				op, show(name), server, u.key)
		case mdns.RcodeBadKey:
			e.Msg = fmt.Sprintf("%s of %s refused by %s: TSIG verification failed (BADKEY): the server does not know %s",
				op, show(name), server, u.key)
		case mdns.RcodeBadTime:
			e.Msg = fmt.Sprintf("%s of %s refused by %s: TSIG verification failed (BADTIME): this machine's clock and the server's differ by more than the 300 s TSIG window; check NTP on both",
				op, show(name), server)
		default:
			e.Msg = fmt.Sprintf("%s of %s refused by %s: TSIG error %s with %s", op, show(name), server, mdns.RcodeToString[int(t.Error)], u.key)
		}
		return e
	}
	switch r.Rcode {
	case mdns.RcodeNotAuth:
		e.Msg = fmt.Sprintf("%s of %s refused by %s: NOTAUTH: the server is not authoritative for zone %s (is it the zone's primary, and does it serve the zone?)",
			op, show(name), server, show(z.Name))
	case mdns.RcodeRefused:
		if op != "update" { // a query: REFUSED means the zone is not served there
			e.Msg = fmt.Sprintf("query of %s refused by %s: REFUSED: the server does not serve a zone holding that name", show(name), server)
		} else {
			e.Msg = fmt.Sprintf("%s of %s refused by %s: REFUSED: %s may not update zone %s there (allow-update / update-policy), or the zone is not served",
				op, show(name), server, u.key, show(z.Name))
		}
	case mdns.RcodeNotZone:
		e.Msg = fmt.Sprintf("%s of %s refused by %s: NOTZONE: the name is outside zone %s", op, show(name), server, show(z.Name))
	case mdns.RcodeServerFailure:
		e.Msg = fmt.Sprintf("%s of %s at %s: SERVFAIL (the server could not process it now)", op, show(name), server)
		e.Transient = true
	case mdns.RcodeNotImplemented:
		e.Msg = fmt.Sprintf("%s of %s refused by %s: NOTIMP: the server does not take dynamic updates (RFC 2136)", op, show(name), server)
	default:
		e.Msg = fmt.Sprintf("%s of %s refused by %s: %s", op, show(name), server, word)
	}
	return e
}

// netError wraps a failed exchange (no answer): transient.
func netError(op, name, server string, err error) *Error {
	return &Error{Op: op, Name: show(name), Server: server, Rcode: -1, Transient: true,
		Msg: fmt.Sprintf("%s of %s: no answer from %s", op, show(name), server), Err: err}
}
