package fleettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Port is the port every S3 server listens on (each on its own loopback
// address).
const S3Port = 7070

// S3Config configures StartS3. The zero value creates bucket "fleetmigrate".
type S3Config struct {
	// Bucket defaults to "fleetmigrate".
	Bucket string
	// TLS, when set, serves HTTPS with a certificate from this CA (clients
	// trust TLS.CertFile); Endpoint is then https://.
	TLS *CA
}

// S3 is a running versitygw S3 server over a directory, with one bucket.
// Clients must use path-style addressing.
type S3 struct {
	// Endpoint is the base URL, http://host:port.
	Endpoint  string
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
	// CA is the CA the server's certificate comes from (nil: plain HTTP).
	CA  *CA
	Dir string
	// DataDir holds one directory per bucket; objects are files below it.
	DataDir string

	proc      *process
	release   func()
	bucketSeq atomic.Int64
}

// StartS3 starts versitygw (posix backend) on its own loopback address and
// creates the bucket. Stop it with Stop.
func StartS3(ctx context.Context, cfg S3Config) (*S3, error) {
	gw, err := findTool("versitygw")
	if err != nil {
		return nil, err
	}
	if cfg.Bucket == "" {
		cfg.Bucket = "fleetmigrate"
	}
	host, release, err := allocHost(S3Port)
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	s := &S3{
		Endpoint: fmt.Sprintf("http://%s:%d", host, S3Port), Region: "us-east-1",
		AccessKey: "AKIA" + randomHex(8), SecretKey: randomHex(20), Bucket: cfg.Bucket, release: release,
	}
	ok := false
	defer func() {
		if !ok {
			release()
		}
	}()
	if s.Dir, err = os.MkdirTemp("", "fleettest-s3-"); err != nil {
		return nil, err
	}
	s.DataDir = filepath.Join(s.Dir, "data")
	if err := os.MkdirAll(s.DataDir, 0o755); err != nil {
		return nil, err
	}
	args := []string{"--port", fmt.Sprintf("%s:%d", host, S3Port)}
	httpc := http.DefaultClient
	if cfg.TLS != nil {
		certFile, keyFile, err := cfg.TLS.Issue(s.Dir, host)
		if err != nil {
			return nil, fmt.Errorf("s3: certificate: %w", err)
		}
		args = append(args, "--cert", certFile, "--key", keyFile)
		s.CA, s.Endpoint, httpc = cfg.TLS, fmt.Sprintf("https://%s:%d", host, S3Port), cfg.TLS.HTTPClient()
	}
	cmd := exec.Command(gw, append(args, "posix", s.DataDir)...)
	// credentials through the environment, not the command line
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	if s.proc, err = startProcess("versitygw "+s.Endpoint, filepath.Join(s.Dir, "versitygw.log"), cmd); err != nil {
		_ = os.RemoveAll(s.Dir)
		return nil, err
	}
	fail := func(err error) (*S3, error) {
		s.proc.kill()
		_ = removeDir(s.Dir)
		return nil, err
	}
	if err := waitReady(ctx, s.proc, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/", nil)
		if err != nil {
			return err
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}); err != nil {
		return fail(err)
	}
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		return fail(fmt.Errorf("s3: create bucket %s: %w\nlog:\n%s", s.Bucket, err, tailFile(s.proc.logPath, 20)))
	}
	ok = true
	return s, nil
}

// NewS3 starts a private S3 server for t.
func NewS3(t testing.TB, cfg S3Config) *S3 {
	t.Helper()
	return startForTest(t, func(ctx context.Context) (*S3, error) { return StartS3(ctx, cfg) })
}

// SharedS3 returns the test binary's shared S3 server, starting it on first
// use. The package's TestMain must call Main.
func SharedS3(t testing.TB) *S3 {
	t.Helper()
	return shared(t, "s3", func(ctx context.Context) (*S3, error) { return StartS3(ctx, S3Config{}) })
}

// NewBucket creates an empty bucket with a fresh name for t and returns the
// name. (Buckets are not removed: the server is thrown away.)
func (s *S3) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("b-%d-%d", os.Getpid(), s.bucketSeq.Add(1))
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("fleettest: create bucket %s: %v", name, err)
	}
	return name
}

// ObjectPath is where the server keeps an object on disk.
func (s *S3) ObjectPath(bucket, key string) string {
	return filepath.Join(s.DataDir, bucket, filepath.FromSlash(key))
}

// Client returns an S3 client for the server with its credentials and
// path-style addressing.
func (s *S3) Client() *s3.Client {
	o := s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	}
	if s.CA != nil {
		o.HTTPClient = s.CA.HTTPClient()
	}
	return s3.New(o)
}

// Stop shuts the server down and removes its directory.
func (s *S3) Stop() error {
	return shutdown(&s.proc, syscall.SIGTERM, 15*time.Second, s.release, s.Dir)
}

// Kill ends the server with SIGKILL; Stop still cleans up.
func (s *S3) Kill() { s.proc.kill() }

// Down stops the server (SIGKILL: an outage, requests in flight cut) but
// keeps its objects and its address; Up starts it again.
func (s *S3) Down() error {
	if s.proc == nil {
		return errors.New("server is stopped for good")
	}
	s.proc.kill()
	return nil
}

// Up starts the server again after Down, with the same objects, address
// and credentials, and waits until it answers.
func (s *S3) Up(ctx context.Context) error {
	return bringUp(ctx, &s.proc, func(ctx context.Context) error {
		_, err := s.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), MaxKeys: aws.Int32(1)})
		return err
	})
}

// LogTail returns the last lines of the server's output.
func (s *S3) LogTail(lines int) string { return tailFile(filepath.Join(s.Dir, "versitygw.log"), lines) }

func (s *S3) describe() string { return "versitygw " + s.Endpoint }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Pause freezes the server (SIGSTOP): connections stay open and nothing
// answers, as a hung server or a black-holed network would. Resume
// continues it.
func (s *S3) Pause() error { return s.proc.pause() }

// Resume continues a paused server.
func (s *S3) Resume() error { return s.proc.resume() }
