package microsandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the tests against the `msb serve` on $MSB_SOCKET, or
// starts one ($MSB_BIN, else ../../target/release/msb) in a temporary
// MSB_HOME. Without a server the run fails saying why (MSB_ALLOW_SKIP=1:
// it prints SKIPPED and passes). VM tests also need $MSB_TEST_IMAGE, an
// image in the server's store (the Rust test serve_go sets both).
func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	if os.Getenv(SocketEnv) == "" {
		stop, err := startServer()
		if err != nil {
			fmt.Fprintf(os.Stderr, "microsandbox tests need `msb serve`: %v\n"+
				"(set MSB_SOCKET to a running server, or MSB_BIN to the msb binary)\n", err)
			if os.Getenv("MSB_ALLOW_SKIP") == "1" {
				fmt.Fprintln(os.Stderr, "SKIPPED: no msb serve")
				return 0
			}
			return 1
		}
		defer stop()
	}
	if os.Getenv("MSB_TEST_IMAGE") == "" {
		fmt.Fprintln(os.Stderr, "SKIPPED: the VM tests (set MSB_TEST_IMAGE to an image in the server's store)")
	}
	return m.Run()
}

// startServer starts `msb serve` in a temporary MSB_HOME and points the
// package's default client at it; the returned func stops it.
func startServer() (func(), error) {
	bin := os.Getenv("MSB_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "target", "release", "msb")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("msb binary: %v", err)
	}
	home, err := os.MkdirTemp("", "msb-go-test-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(home, "msb.sock")
	cmd := exec.Command(bin, "serve", "--socket", sock)
	cmd.Env = append(os.Environ(), HomeEnv+"="+home)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		os.RemoveAll(home)
	}
	os.Setenv(HomeEnv, home)
	os.Setenv(SocketEnv, sock)
	c := NewClient(WithSocketPath(sock))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.ListVolumes(context.Background()); err == nil {
			return stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s did not answer within 30 s", sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// vmImage is the image VM tests boot, or skips the test saying why.
func vmImage(t *testing.T) string {
	img := os.Getenv("MSB_TEST_IMAGE")
	if img == "" {
		t.Skip("VM test: set MSB_TEST_IMAGE to an image in the server's store")
	}
	return img
}

// ctxFor is a context for one test step.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// uniqueName is a volume or sandbox name no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000_000)
}

// mustKind fails unless err matches kind with errors.Is.
func mustKind(t *testing.T, what string, err error, kind ErrorKind) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("%s: %v (%#v), want %v", what, err, err, kind)
	}
}
