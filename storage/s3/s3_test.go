package s3_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fleetmigrate/fleetmigrate/internal/fleettest"
	"github.com/fleetmigrate/fleetmigrate/storage"
	"github.com/fleetmigrate/fleetmigrate/storage/s3"
	"github.com/fleetmigrate/fleetmigrate/storage/storagetest"
)

func TestMain(m *testing.M) { fleettest.Main(m) }

func config(srv *fleettest.S3, bucket string) s3.Config {
	return s3.Config{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: bucket, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
}

func TestContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storagetest.Harness {
		srv := fleettest.SharedS3(t)
		bucket := srv.NewBucket(t)
		st, err := s3.New(context.Background(), config(srv, bucket))
		if err != nil {
			t.Fatal(err)
		}
		return harness(srv, bucket, st)
	})
}

// harness is the contract suite's view of a bucket on the test server.
func harness(srv *fleettest.S3, bucket string, st *s3.Store) storagetest.Harness {
	return storagetest.Harness{
		Store:   st,
		Corrupt: func(t *testing.T, key string) { flip(t, srv.ObjectPath(bucket, key)) },
		Leftovers: func(t *testing.T) int {
			out, err := srv.Client().ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
			if err != nil {
				t.Fatal(err)
			}
			return len(out.Uploads)
		},
		Abandon: func(t *testing.T, key string) { abandon(t, srv, bucket, key) },
	}
}

// abandon starts a multipart upload of key and sends one part, as a
// process killed mid-upload leaves it.
func abandon(t *testing.T, srv *fleettest.S3, bucket, key string) {
	t.Helper()
	ctx := context.Background()
	up, err := srv.Client().CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client().UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: up.UploadId,
		PartNumber: aws.Int32(1), Body: strings.NewReader(strings.Repeat("p", 5<<20))}); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWithAPrefix(t *testing.T) {
	srv := fleettest.SharedS3(t)
	cfg := config(srv, srv.NewBucket(t))
	cfg.Prefix = "team-a/"
	st, err := s3.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, "dumps/x", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(srv.ObjectPath(cfg.Bucket, "team-a/dumps/x")); err != nil {
		t.Fatalf("object not under the prefix: %v", err)
	}
	for o, err := range st.List(ctx, "dumps/") {
		if err != nil || o.Key != "dumps/x" {
			t.Fatalf("list: %+v, %v", o, err)
		}
	}
	if url := st.URL("dumps/x"); url != "s3://"+cfg.Bucket+"/team-a/dumps/x" {
		t.Fatalf("URL %s", url)
	}
	abandon(t, srv, cfg.Bucket, "team-a/dumps/y")
	abandon(t, srv, cfg.Bucket, "team-b/dumps/z") // another tool's: not ours to see
	var pending []storage.Pending
	for p, err := range st.Pending(ctx, "dumps/") {
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	if len(pending) != 1 || pending[0].Key != "dumps/y" {
		t.Fatalf("pending under the prefix: %+v", pending)
	}
	if err := st.Abort(ctx, pending[0]); err != nil {
		t.Fatal(err)
	}
}

// TestBadConfiguration: wrong credentials and a missing bucket are refused
// at start, naming the endpoint and bucket and never the secret; an
// unreachable server is a plain (transient) error.
func TestBadConfiguration(t *testing.T) {
	srv := fleettest.SharedS3(t)
	bucket := srv.NewBucket(t)
	ctx := context.Background()

	wrong := config(srv, bucket)
	wrong.SecretKey = "wrong-secret-" + srv.SecretKey[:6]
	_, err := s3.New(ctx, wrong)
	if !errors.Is(err, storage.ErrConfig) || !strings.Contains(err.Error(), srv.Endpoint) || !strings.Contains(err.Error(), bucket) ||
		!strings.Contains(err.Error(), "access") || strings.Contains(err.Error(), wrong.SecretKey) {
		t.Errorf("wrong secret: %v", err)
	}
	unknown := config(srv, bucket)
	unknown.AccessKey = "AKIANOBODY"
	if _, err := s3.New(ctx, unknown); !errors.Is(err, storage.ErrConfig) {
		t.Errorf("unknown access key: %v", err)
	}
	missing := config(srv, "no-such-bucket")
	if _, err := s3.New(ctx, missing); !errors.Is(err, storage.ErrConfig) || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("missing bucket: %v", err)
	}
	away := config(srv, bucket)
	away.Endpoint = "http://127.0.0.1:1"
	away.MaxAttempts = 1
	if _, err := s3.New(ctx, away); err == nil || errors.Is(err, storage.ErrConfig) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("unreachable server: %v; want a transient error naming it", err)
	}
	for _, bad := range []s3.Config{{Bucket: ""}, {Bucket: bucket, PartSize: 1 << 20}, {Bucket: bucket, SSE: "rot13"}, {Bucket: bucket, AccessKey: "only"}} {
		if _, err := s3.New(ctx, bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestPresignedDownload(t *testing.T) {
	srv := fleettest.SharedS3(t)
	st, err := s3.New(context.Background(), config(srv, srv.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, "dumps/y.sql.zst", strings.NewReader("dump bytes"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := st.PresignGet(ctx, "dumps/y.sql.zst", 10*60e9, "shop-2026-11-23.sql.zst")
	if err != nil {
		t.Fatal(err)
	}
	body, err := fleettest.Get(u)
	if err != nil || body != "dump bytes" {
		t.Fatalf("presigned GET: %q, %v", body, err)
	}
	if _, err := fleettest.Get(strings.Replace(u, "X-Amz-Signature=", "X-Amz-Signature=0", 1)); err == nil {
		t.Fatal("a tampered presigned URL downloaded")
	}
}

// TestServerSideEncryption: uploads with SSE-S3 and SSE-KMS headers, single
// and multipart, are accepted and read back. (versitygw takes the headers;
// whether a server encrypts at rest cannot be observed from here.)
func TestServerSideEncryption(t *testing.T) {
	srv := fleettest.SharedS3(t)
	for _, sse := range []string{"AES256", "aws:kms"} {
		cfg := config(srv, srv.NewBucket(t))
		cfg.SSE, cfg.SSEKMSKeyID = sse, ""
		if sse == "aws:kms" {
			cfg.SSEKMSKeyID = "alias/fleetmigrate"
		}
		st, err := s3.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1 << 10, 20 << 20} {
			body := strings.Repeat("s", size)
			if _, err := st.Put(context.Background(), "enc/x", strings.NewReader(body), storage.PutOptions{}); err != nil {
				t.Fatalf("SSE %s, %d bytes: %v", sse, size, err)
			}
			rc, _, err := st.Get(context.Background(), "enc/x")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if string(got) != body {
				t.Fatalf("SSE %s: read back %d bytes", sse, len(got))
			}
		}
	}
}

func BenchmarkPutCompressed(b *testing.B) {
	srv := fleettest.SharedS3(b)
	st, err := s3.New(context.Background(), config(srv, srv.NewBucket(b)))
	if err != nil {
		b.Fatal(err)
	}
	storagetest.BenchmarkPutCompressed(b, st)
}

// TestTLSWithPrivateCA: an https endpoint whose certificate comes from a
// private CA works with ca-file and is refused without it (the system's
// roots do not know the CA): the whole contract runs over TLS.
func TestTLSWithPrivateCA(t *testing.T) {
	ca, err := fleettest.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := fleettest.NewS3(t, fleettest.S3Config{TLS: ca})
	if !strings.HasPrefix(srv.Endpoint, "https://") {
		t.Fatalf("endpoint %s", srv.Endpoint)
	}
	cfg := config(srv, srv.Bucket)
	if _, err := s3.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: %v, want a certificate error", err)
	}
	cfg.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := s3.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "storage.s3.ca-file") {
		t.Fatalf("missing CA file: %v", err)
	}
	cfg.CAFile = ca.CertFile
	storagetest.Run(t, func(t *testing.T) storagetest.Harness {
		bucket := srv.NewBucket(t)
		c := cfg
		c.Bucket = bucket
		st, err := s3.New(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return harness(srv, bucket, st)
	})
}
