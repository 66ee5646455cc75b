// Package storeopen opens the object store the configuration names.
package storeopen

import (
	"context"
	"fmt"

	"github.com/fleetmigrate/fleetmigrate/internal/config"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/file"
	"github.com/fleetmigrate/fleetmigrate/storage/s3"
)

// Open returns the configured object store, checked to be usable.
func Open(ctx context.Context, c config.Storage) (storage.Store, error) {
	switch c.Backend {
	case "file", "":
		if c.Dir == "" {
			return nil, fmt.Errorf("storage.dir is empty")
		}
		return file.New(c.Dir)
	case "s3":
		return s3.New(ctx, s3.Config{
			Endpoint: c.S3.Endpoint, PublicEndpoint: c.S3.PublicEndpoint, Region: c.S3.Region, Bucket: c.S3.Bucket,
			Prefix: c.S3.Prefix, PathStyle: c.S3.PathStyle, AccessKey: c.S3.AccessKey, SecretKey: c.S3.SecretKey,
			PartSize: int64(c.S3.PartSizeMiB) << 20, Concurrency: c.S3.Concurrency, SSE: c.S3.SSE, SSEKMSKeyID: c.S3.SSEKMSKeyID,
			MaxAttempts: c.S3.MaxAttempts, ChecksumWhenSupported: c.S3.Checksums, CAFile: c.S3.CAFile,
		})
	default:
		return nil, fmt.Errorf("storage.backend %q: want file or s3", c.Backend)
	}
}
