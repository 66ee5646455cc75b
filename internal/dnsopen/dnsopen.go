// Package dnsopen builds the DNS updater and the hosts' DNS targets the
// configuration describes.
package dnsopen

import (
	"errors"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/dns"
	"github.com/fleetmigrate/fleetmigrate/internal/config"
)

// Updater returns the updater of the dns section. Close it when done.
func Updater(c config.DNS) (*dns.Updater, error) {
	if !c.Configured() {
		return nil, errors.New("the dns section names no zones and no server: configure dns.zones (name, primary, secondaries) and the TSIG key")
	}
	key := dns.Key{Name: c.KeyName, Algorithm: c.KeyAlgorithm, Secret: c.KeySecret}
	if c.KeyFile != "" {
		var err error
		if key, err = dns.ReadKeyFile(c.KeyFile); err != nil {
			return nil, err
		}
	}
	zones := make([]dns.Zone, len(c.Zones))
	for i, z := range c.Zones {
		zones[i] = dns.Zone{Name: z.Name, Primary: z.Primary, Secondaries: z.Secondaries}
	}
	u, err := dns.New(dns.Config{Zones: zones, Server: c.Server, Key: key, Timeout: c.Timeout,
		ConfirmTimeout: c.ConfirmTimeout, TTL: uint32(c.TTL), MaxBatch: c.MaxBatch})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return u, nil
}
