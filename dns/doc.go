// Package dns repoints each database's DNS name at its destination with
// TSIG-signed RFC 2136 updates (miekg/dns), only if the record still points
// at the source, and confirms the answer at the authoritative servers.
package dns
