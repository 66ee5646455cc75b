// Package s3 is a storage.Store on Amazon S3 or an S3-compatible server
// (MinIO, Ceph, versitygw...), with aws-sdk-go-v2.
//
// Uploads stream from the reader in parts (part size × concurrency bounds
// the memory) with the SDK's transfer manager, which aborts the multipart
// upload when the upload fails or its context is cancelled, on a fresh
// context so that no parts are left behind. Retries are the SDK's standard
// retryer.
package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"iter"
	"mime"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/fleetmigrate/fleetmigrate/storage"
)

// Defaults for Config.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 4
	DefaultMaxAttempts = 5
	minPartSize        = 5 << 20
	// abortTimeout bounds the abort of a failed multipart upload, which runs
	// on a fresh context so that a cancelled upload leaves no parts behind.
	abortTimeout = 30 * time.Second
)

// Config says how to reach a bucket.
type Config struct {
	// Endpoint is the server's base URL; empty for Amazon S3.
	Endpoint string
	// PublicEndpoint, when set, is used in presigned download links instead
	// of Endpoint (customers reach the server by another name).
	PublicEndpoint string
	Region         string
	Bucket         string
	// Prefix is prepended to every key (several tools sharing a bucket).
	Prefix string
	// PathStyle addresses the bucket in the path (most S3-compatible
	// servers) instead of the host name.
	PathStyle bool
	// AccessKey and SecretKey; both empty means the SDK's standard chain
	// (environment, shared files, instance role...).
	AccessKey, SecretKey string
	// PartSize and Concurrency bound an upload's memory: about
	// PartSize × (Concurrency + 1).
	PartSize    int64
	Concurrency int
	// SSE is "" (the bucket's default), "AES256" (SSE-S3) or "aws:kms"
	// (SSE-KMS with SSEKMSKeyID, or the account's default KMS key).
	SSE         string
	SSEKMSKeyID string
	// MaxAttempts is the SDK retryer's attempts per request.
	MaxAttempts int
	// ChecksumWhenSupported turns on the SDK's extra request checksums
	// (CRC32); off by default because some S3-compatible servers refuse them.
	// Our own SHA-256 of every object is recorded either way.
	ChecksumWhenSupported bool
	// CAFile is a PEM bundle of the certificate authorities to trust for an
	// https endpoint whose certificate the system's roots do not cover
	// (a private CA). Empty: the system's roots.
	CAFile string
}

// Store is a bucket (and prefix).
type Store struct {
	cfg     Config
	client  *s3.Client
	presign *s3.PresignClient
	tm      *transfermanager.Client
}

var (
	_ storage.Store     = (*Store)(nil)
	_ storage.Presigner = (*Store)(nil)
	_ storage.Janitor   = (*Store)(nil)
)

// New connects to the bucket and checks that it is there and ours to use.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket configured (storage.s3.bucket)")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < minPartSize {
		return nil, fmt.Errorf("s3: part size %d bytes: S3 needs at least 5 MiB", cfg.PartSize)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	switch cfg.SSE {
	case "", string(types.ServerSideEncryptionAes256), string(types.ServerSideEncryptionAwsKms):
	default:
		return nil, fmt.Errorf("s3: server-side encryption %q: want AES256 or aws:kms", cfg.SSE)
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("s3: give both access key and secret key, or neither (to use the standard credential chain)")
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(cfg.Region),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = 20 * time.Second
			})
		}),
	}
	if cfg.CAFile != "" {
		bundle, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3: CA bundle (storage.s3.ca-file): %w", err)
		}
		opts = append(opts, awsconfig.WithCustomCABundle(bytes.NewReader(bundle)))
	}
	if cfg.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}
	checksum := aws.RequestChecksumCalculationWhenRequired
	if cfg.ChecksumWhenSupported {
		checksum = aws.RequestChecksumCalculationWhenSupported
	}
	clientFor := func(endpoint string) *s3.Client {
		return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
			if endpoint != "" {
				o.BaseEndpoint = aws.String(endpoint)
			}
			o.UsePathStyle = cfg.PathStyle
			o.RequestChecksumCalculation = checksum
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		})
	}
	s := &Store{cfg: cfg, client: clientFor(cfg.Endpoint)}
	pub := cfg.Endpoint
	if cfg.PublicEndpoint != "" {
		pub = cfg.PublicEndpoint
	}
	s.presign = s3.NewPresignClient(clientFor(pub))
	s.tm = transfermanager.New(s.client, func(o *transfermanager.Options) {
		o.PartSizeBytes = cfg.PartSize
		o.Concurrency = cfg.Concurrency
		o.FailTimeout = abortTimeout
		o.RequestChecksumCalculation = checksum
	})
	if _, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, s.wrap("check the bucket", "", err)
	}
	return s, nil
}

// Describe names the store for messages: endpoint and bucket, never
// credentials.
func (s *Store) Describe() string {
	ep := s.cfg.Endpoint
	if ep == "" {
		ep = "Amazon S3 (" + s.cfg.Region + ")"
	}
	return fmt.Sprintf("s3 %s bucket %s", ep, s.cfg.Bucket)
}

func (s *Store) key(key string) (string, error) {
	if err := storage.ValidKey(key); err != nil {
		return "", err
	}
	return s.cfg.Prefix + key, nil
}

// wrap turns an SDK error into one naming the store, the operation and the
// key, classified: configuration problems wrap storage.ErrConfig (retrying
// cannot help), a missing key storage.ErrNotFound; the rest is transient.
func (s *Store) wrap(op, key string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	what := op
	if key != "" {
		what += " " + key
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch code := apiErr.ErrorCode(); code {
		case "NoSuchKey", "NotFound":
			if key != "" {
				return fmt.Errorf("%s: %s: %w", s.Describe(), what, storage.ErrNotFound)
			}
			return fmt.Errorf("%s: %s: the bucket does not exist (%s): %w", s.Describe(), what, code, storage.ErrConfig)
		case "NoSuchBucket":
			return fmt.Errorf("%s: %s: the bucket does not exist: %w", s.Describe(), what, storage.ErrConfig)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "InvalidToken", "ExpiredToken":
			return fmt.Errorf("%s: %s: access refused (%s): check the access key and secret key in the configuration: %w",
				s.Describe(), what, code, storage.ErrConfig)
		default:
			return fmt.Errorf("%s: %s: %s: %s", s.Describe(), what, code, apiErr.ErrorMessage())
		}
	}
	return fmt.Errorf("%s: %s: %w", s.Describe(), what, err)
}

// hashingReader counts and hashes what the uploader reads.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	hr.n += int64(n)
	return n, err
}

// Put streams r to key in parts.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opt storage.PutOptions) (storage.PutResult, error) {
	k, err := s.key(key)
	if err != nil {
		return storage.PutResult{}, err
	}
	hr := &hashingReader{r: r, h: sha256.New()}
	in := &transfermanager.UploadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), Body: hr}
	if opt.ContentType != "" {
		in.ContentType = aws.String(opt.ContentType)
	}
	if s.cfg.SSE != "" {
		in.ServerSideEncryption = tmtypes.ServerSideEncryption(s.cfg.SSE)
		if s.cfg.SSEKMSKeyID != "" {
			in.SSEKMSKeyID = aws.String(s.cfg.SSEKMSKeyID)
		}
	}
	if _, err := s.tm.UploadObject(ctx, in); err != nil {
		if ctx.Err() != nil {
			return storage.PutResult{}, ctx.Err()
		}
		return storage.PutResult{}, s.wrap("upload", key, err)
	}
	return storage.PutResult{Size: hr.n, SHA256: hex.EncodeToString(hr.h.Sum(nil))}, nil
}

// Get opens an object.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, storage.Object, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, storage.Object{}, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		return nil, storage.Object{}, s.wrap("download", key, err)
	}
	return out.Body, storage.Object{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// Stat describes an object.
func (s *Store) Stat(ctx context.Context, key string) (storage.Object, error) {
	k, err := s.key(key)
	if err != nil {
		return storage.Object{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)})
	if err != nil {
		return storage.Object{}, s.wrap("stat", key, err)
	}
	return storage.Object{Key: key, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// Delete removes an object (S3 deletes are idempotent).
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k)}); err != nil {
		return s.wrap("delete", key, err)
	}
	return nil
}

// List yields the objects under prefix, a page of up to 1,000 at a time.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[storage.Object, error] {
	return func(yield func(storage.Object, error) bool) {
		p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.cfg.Prefix + prefix)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(storage.Object{}, s.wrap("list", prefix, err))
				return
			}
			for _, o := range page.Contents {
				key := strings.TrimPrefix(aws.ToString(o.Key), s.cfg.Prefix)
				if !yield(storage.Object{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)}, nil) {
					return
				}
			}
		}
	}
}

// Pending yields the incomplete multipart uploads under prefix, a page of
// up to 1,000 at a time. The transfer manager aborts its own on failure or
// cancellation; these are what a killed process left behind.
func (s *Store) Pending(ctx context.Context, prefix string) iter.Seq2[storage.Pending, error] {
	return func(yield func(storage.Pending, error) bool) {
		p := s3.NewListMultipartUploadsPaginator(s.client, &s3.ListMultipartUploadsInput{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.cfg.Prefix + prefix)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				yield(storage.Pending{}, s.wrap("list the incomplete uploads under", prefix, err))
				return
			}
			for _, u := range page.Uploads {
				key := strings.TrimPrefix(aws.ToString(u.Key), s.cfg.Prefix)
				if !yield(storage.Pending{Key: key, ID: aws.ToString(u.UploadId), Started: aws.ToTime(u.Initiated)}, nil) {
					return
				}
			}
		}
	}
}

// Abort aborts an incomplete multipart upload, freeing its parts.
func (s *Store) Abort(ctx context.Context, p storage.Pending) error {
	k, err := s.key(p.Key)
	if err != nil {
		return err
	}
	_, err = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k), UploadId: aws.String(p.ID)})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchUpload" {
		return nil // gone already (finished, or aborted by someone else)
	}
	if err != nil {
		return s.wrap("abort the incomplete upload of", p.Key, err)
	}
	return nil
}

// URL is s3://bucket/<prefix><key>.
func (s *Store) URL(key string) string {
	return (&url.URL{Scheme: "s3", Host: s.cfg.Bucket, Path: "/" + s.cfg.Prefix + key}).String()
}

// Key is the inverse of URL.
func (s *Store) Key(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host != s.cfg.Bucket || !strings.HasPrefix(u.Path, "/"+s.cfg.Prefix) {
		return "", fmt.Errorf("%q is not an object of %s", raw, s.Describe())
	}
	key := strings.TrimPrefix(u.Path, "/"+s.cfg.Prefix)
	return key, storage.ValidKey(key)
}

// PresignGet returns a URL that downloads key for ttl, as an attachment
// named filename.
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration, filename string) (string, error) {
	k, err := s.key(key)
	if err != nil {
		return "", err
	}
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(k),
		ResponseContentDisposition: aws.String(mime.FormatMediaType("attachment", map[string]string{"filename": filename})),
	}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", s.wrap("presign", key, err)
	}
	return req.URL, nil
}
