package microsandbox

import (
	"io"
	"strings"
	"testing"
	"time"
)

// Two sandboxes share one named volume: a writer writes, a reader (the
// volume mounted read-only) reads and cannot write. Also: exec with stdin,
// timeouts, streamed exec with a stdin pipe and signals, handles, and the
// errors only sandboxes cause. Two VM boots.
func TestSandboxesShareANamedVolume(t *testing.T) {
	image := vmImage(t)
	ctx := ctxFor(t)
	volName := uniqueName("shared-data")
	vol, err := CreateVolume(ctx, volName, WithVolumeQuota(16))
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Remove(ctx)
	if err := vol.FS().WriteString("seed.txt", "hello"); err != nil {
		t.Fatal(err)
	}

	writerName := uniqueName("writer")
	writer, err := CreateSandbox(ctx, writerName,
		WithImage(image),
		WithEnv(map[string]string{"GREETING": "hi"}),
		WithMounts(map[string]MountConfig{
			"/data":    Mount.Named(volName, MountOptions{}),
			"/scratch": Mount.Tmpfs(TmpfsOptions{SizeMiB: 16}),
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Remove(ctx)
	if writer.Name() != writerName {
		t.Errorf("Name %q", writer.Name())
	}
	out, err := writer.Exec(ctx, "cat", []string{"/data/seed.txt"})
	if err != nil || out.Stdout() != "hello" || !out.Success() {
		t.Fatalf("cat seed: %+v, %v", out, err)
	}
	out, err = writer.Shell(ctx, "echo $GREETING; echo 'hello' > /data/message.txt; echo err >&2; exit 3")
	if err != nil || out.Stdout() != "hi\n" || out.Stderr() != "err\n" || out.ExitCode() != 3 || out.Success() {
		t.Fatalf("shell: %q %q %d, %v", out.Stdout(), out.Stderr(), out.ExitCode(), err)
	}
	if got, err := vol.FS().ReadString("message.txt"); err != nil || got != "hello\n" {
		t.Errorf("the host sees %q, %v", got, err)
	}
	out, err = writer.Exec(ctx, "wc", []string{"-c"}, WithExecStdin([]byte("12345")))
	if err != nil || strings.TrimSpace(out.Stdout()) != "5" {
		t.Errorf("stdin: %q, %v", out.Stdout(), err)
	}
	out, err = writer.Exec(ctx, "pwd", nil, WithExecCwd("/data"), WithExecEnv(map[string]string{"X": "1"}))
	if err != nil || out.Stdout() != "/data\n" {
		t.Errorf("cwd: %q, %v", out.Stdout(), err)
	}
	out, err = writer.Exec(ctx, "sleep", []string{"30"}, WithExecTimeout(500*time.Millisecond))
	mustKind(t, "timeout", err, ErrExecTimeout)
	if out == nil || out.ExitCode() != 124 {
		t.Errorf("timeout output: %+v", out)
	}
	out, err = writer.Exec(ctx, "no-such-command", nil)
	if err != nil || out.ExitCode() != 127 {
		t.Errorf("missing command: %+v, %v", out, err)
	}

	// Streamed, with a stdin pipe.
	h, err := writer.ExecStream(ctx, "sh", []string{"-c", "cat; echo done >&2; exit 7"}, WithExecStdinPipe())
	if err != nil {
		t.Fatal(err)
	}
	stdin := h.TakeStdin()
	if stdin == nil || h.TakeStdin() != nil {
		t.Fatal("TakeStdin: one sink, once")
	}
	if _, err := io.WriteString(stdin, "streamed\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	got, err := h.Collect(ctx)
	h.Close()
	if err != nil || got.Stdout() != "streamed\n" || got.Stderr() != "done\n" || got.ExitCode() != 7 {
		t.Fatalf("stream: %+v, %v", got, err)
	}
	// Events one by one, and a signal.
	h, err = writer.ShellStream(ctx, "echo ready; exec sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := h.Recv(ctx)
	if err != nil || ev.Kind != ExecEventStdout || string(ev.Data) != "ready\n" {
		t.Fatalf("first event: %+v, %v", ev, err)
	}
	if err := h.Signal(ctx, 15); err != nil {
		t.Fatal(err)
	}
	code, err := h.Wait(ctx)
	h.Close()
	if err != nil || code != 143 {
		t.Errorf("after SIGTERM: exit %d, %v", code, err)
	}
	if ev, _ := h.Recv(ctx); ev == nil || ev.Kind != ExecEventDone {
		t.Errorf("after the exit: %+v", ev)
	}

	// The reader mounts the same volume read-only.
	readerName := uniqueName("reader")
	reader, err := CreateSandbox(ctx, readerName,
		WithImage(image),
		WithMounts(map[string]MountConfig{
			"/data": Mount.Named(volName, MountOptions{Readonly: true}),
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Remove(ctx)
	out, err = reader.Exec(ctx, "cat", []string{"/data/message.txt"})
	if err != nil || out.Stdout() != "hello\n" {
		t.Fatalf("reader: %q, %v", out.Stdout(), err)
	}
	out, err = reader.Shell(ctx, "echo nope > /data/nope.txt")
	if err != nil || out.Success() {
		t.Errorf("a read-only mount took a write: %+v, %v", out, err)
	}

	// Handles and the errors only sandboxes cause.
	hd, err := GetSandbox(ctx, readerName)
	if err != nil || hd.Name() != readerName || hd.Status() != SandboxStatusRunning || hd.CreatedAt().IsZero() || hd.StartedAt().IsZero() {
		t.Fatalf("GetSandbox: %+v, %v", hd, err)
	}
	if len(hd.Mounts()) != 1 || !strings.Contains(hd.Mounts()[0], volName) || hd.Image() == "" {
		t.Errorf("mounts %v image %q", hd.Mounts(), hd.Image())
	}
	list, err := ListSandboxes(ctx)
	if err != nil || len(list) < 2 {
		t.Fatalf("ListSandboxes: %d, %v", len(list), err)
	}
	_, err = CreateSandbox(ctx, readerName, WithImage(image))
	mustKind(t, "CreateSandbox twice", err, ErrSandboxAlreadyExists)
	mustKind(t, "RemoveSandbox while it runs", RemoveSandbox(ctx, readerName), ErrSandboxStillRunning)
	mustKind(t, "RemoveVolume while in use", vol.Remove(ctx), ErrVolumeInUse)
	if err := reader.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = reader.Exec(ctx, "true", nil)
	mustKind(t, "exec into a stopped sandbox", err, ErrSandboxNotRunning)
	hd, _ = GetSandbox(ctx, readerName)
	_, err = hd.Connect(ctx)
	mustKind(t, "Connect to a stopped sandbox", err, ErrSandboxNotRunning)
	if err := hd.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := writer.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = GetSandbox(ctx, writerName)
	mustKind(t, "GetSandbox after Remove", err, ErrSandboxNotFound)
	if err := vol.Remove(ctx); err != nil {
		t.Fatal(err)
	}
}
