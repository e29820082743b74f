package microsandbox

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// Frame kinds of the msb-exec protocol (see docs/openapi.json).
const (
	frameStdout = 1
	frameStderr = 2
	frameExit   = 3
	frameError  = 4
	frameStdin  = 16
	frameSignal = 17
	frameResize = 18
	// maxFrame is the largest payload either side may send.
	maxFrame = 1 << 20
)

// ExecEventKind says what an ExecEvent carries.
type ExecEventKind int

const (
	// ExecEventStdout carries a chunk of standard output.
	ExecEventStdout ExecEventKind = iota + 1
	// ExecEventStderr carries a chunk of standard error.
	ExecEventStderr
	// ExecEventExited: the command ended; ExitCode is set.
	ExecEventExited
	// ExecEventFailed: the stream failed; Err is set.
	ExecEventFailed
	// ExecEventDone: nothing more follows.
	ExecEventDone
)

// ExecEvent is one event of a streamed command.
type ExecEvent struct {
	// Kind says which fields are set.
	Kind ExecEventKind
	// Data is a chunk of stdout or stderr.
	Data []byte
	// ExitCode is the exit code (ExecEventExited).
	ExitCode int
	// TimedOut is true when WithExecTimeout killed it (ExecEventExited).
	TimedOut bool
	// Err is what failed (ExecEventFailed).
	Err error
}

// ExecHandle is a command running with its stdio streamed. Recv is for one
// goroutine; Signal, Kill, Resize and the stdin sink may be used from
// others. Close it when done: closing before the exit kills the command.
type ExecHandle struct {
	conn    io.ReadWriteCloser
	wmu     sync.Mutex
	events  chan ExecEvent
	done    bool
	stdin   *ExecSink
	closeMu sync.Once
	closed  chan struct{}
}

// ExecSink writes to a streamed command's stdin (an io.WriteCloser);
// Close closes the command's stdin.
type ExecSink struct {
	h *ExecHandle
}

// Write sends p to the command's stdin.
func (s *ExecSink) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += maxFrame {
		end := off + maxFrame
		if end > len(p) {
			end = len(p)
		}
		if err := s.h.send(frameStdin, p[off:end]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// Close closes the command's stdin (it reads end of file).
func (s *ExecSink) Close() error { return s.h.send(frameStdin, nil) }

// send writes one frame.
func (h *ExecHandle) send(kind byte, payload []byte) error {
	head := make([]byte, 5, 5+len(payload))
	head[0] = kind
	binary.BigEndian.PutUint32(head[1:], uint32(len(payload)))
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if _, err := h.conn.Write(append(head, payload...)); err != nil {
		return &Error{Kind: ErrExecFailed, Message: "exec stream: " + err.Error(), Cause: err}
	}
	return nil
}

// read decodes the server's frames into events until the end.
func (h *ExecHandle) read() {
	defer close(h.events)
	r := bufio.NewReader(h.conn)
	head := make([]byte, 5)
	emit := func(ev ExecEvent) {
		select {
		case h.events <- ev:
		case <-h.closed:
		}
	}
	fail := func(err error) { emit(ExecEvent{Kind: ExecEventFailed, Err: err}) }
	for {
		if _, err := io.ReadFull(r, head); err != nil {
			fail(&Error{Kind: ErrExecFailed, Message: "exec stream ended before the command: " + err.Error(), Cause: err})
			return
		}
		n := binary.BigEndian.Uint32(head[1:])
		if n > maxFrame {
			fail(&Error{Kind: ErrExecFailed, Message: fmt.Sprintf("exec stream: a frame of %d bytes", n)})
			return
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			fail(&Error{Kind: ErrExecFailed, Message: "exec stream: " + err.Error(), Cause: err})
			return
		}
		switch head[0] {
		case frameStdout:
			emit(ExecEvent{Kind: ExecEventStdout, Data: payload})
		case frameStderr:
			emit(ExecEvent{Kind: ExecEventStderr, Data: payload})
		case frameExit:
			var x exitInfo
			if err := json.Unmarshal(payload, &x); err != nil {
				fail(&Error{Kind: ErrInternal, Message: "exec stream: bad exit frame", Cause: err})
				return
			}
			emit(ExecEvent{Kind: ExecEventExited, ExitCode: x.ExitCode, TimedOut: x.TimedOut})
			return
		case frameError:
			var a apiError
			_ = json.Unmarshal(payload, &a)
			fail(fromAPI(a, 0))
			return
		default:
			fail(&Error{Kind: ErrInternal, Message: fmt.Sprintf("exec stream: unknown frame kind %d", head[0])})
			return
		}
	}
}

// Recv returns the next event; after ExecEventExited or ExecEventFailed
// it returns ExecEventDone.
func (h *ExecHandle) Recv(ctx context.Context) (*ExecEvent, error) {
	if h.done {
		return &ExecEvent{Kind: ExecEventDone}, nil
	}
	select {
	case <-ctx.Done():
		return nil, &Error{Kind: ErrCancelled, Message: ctx.Err().Error(), Cause: ctx.Err()}
	case ev, ok := <-h.events:
		if !ok {
			h.done = true
			return &ExecEvent{Kind: ExecEventDone}, nil
		}
		if ev.Kind == ExecEventExited || ev.Kind == ExecEventFailed {
			h.done = true
		}
		return &ev, nil
	}
}

// TakeStdin returns the command's stdin; nil unless the stream was started
// with WithExecStdinPipe, and nil on a second call.
func (h *ExecHandle) TakeStdin() *ExecSink {
	s := h.stdin
	h.stdin = nil
	return s
}

// Collect reads the stream to its end and returns the whole output (with
// an ErrExecTimeout error when the timeout killed it).
func (h *ExecHandle) Collect(ctx context.Context) (*ExecOutput, error) {
	out := &ExecOutput{}
	for {
		ev, err := h.Recv(ctx)
		if err != nil {
			return nil, err
		}
		switch ev.Kind {
		case ExecEventStdout:
			out.stdout = append(out.stdout, ev.Data...)
		case ExecEventStderr:
			out.stderr = append(out.stderr, ev.Data...)
		case ExecEventExited:
			out.exitCode = ev.ExitCode
			return out, endError(exitInfo{ExitCode: ev.ExitCode, TimedOut: ev.TimedOut})
		case ExecEventFailed:
			return nil, ev.Err
		case ExecEventDone:
			return nil, &Error{Kind: ErrExecFailed, Message: "exec stream: already consumed"}
		}
	}
}

// Wait discards the output and returns the exit code.
func (h *ExecHandle) Wait(ctx context.Context) (int, error) {
	out, err := h.Collect(ctx)
	if out == nil {
		return -1, err
	}
	return out.ExitCode(), err
}

// Signal sends a signal (e.g. 15 for SIGTERM) to the command's process
// group.
func (h *ExecHandle) Signal(_ context.Context, signal int) error {
	if signal <= 0 || signal > 64 {
		return invalid("signal %d is not a signal number", signal)
	}
	p := make([]byte, 4)
	binary.BigEndian.PutUint32(p, uint32(signal))
	return h.send(frameSignal, p)
}

// Kill sends SIGKILL to the command.
func (h *ExecHandle) Kill(ctx context.Context) error { return h.Signal(ctx, 9) }

// Resize changes the size of the command's pty, when it runs on one.
func (h *ExecHandle) Resize(_ context.Context, rows, cols uint16) error {
	p := make([]byte, 4)
	binary.BigEndian.PutUint16(p, rows)
	binary.BigEndian.PutUint16(p[2:], cols)
	return h.send(frameResize, p)
}

// Close ends the stream; a command still running is killed.
func (h *ExecHandle) Close() error {
	var err error
	h.closeMu.Do(func() {
		close(h.closed)
		err = h.conn.Close()
	})
	return err
}

// ExecStream starts cmd with args and streams its stdout and stderr as
// events; with WithExecStdinPipe its stdin is open for TakeStdin (else it
// reads end of file). Close the handle when done.
func (s *Sandbox) ExecStream(ctx context.Context, cmd string, args []string, opts ...ExecOption) (*ExecHandle, error) {
	cfg := ExecConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Stdin != nil {
		return nil, invalid("WithExecStdin is for Exec; a stream writes to TakeStdin()")
	}
	req, err := buildExec(cmd, args, cfg)
	if err != nil {
		return nil, err
	}
	hreq, err := s.c.newRequest(ctx, "POST", "/v1/sandboxes/"+pathName(s.name)+"/exec/stream", req, nil)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", "msb-exec")
	resp, err := s.c.http.Do(hreq)
	if err != nil {
		return nil, s.c.transportError(ctx, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, &Error{Kind: ErrInternal, Message: "exec stream: the connection cannot be written to"}
	}
	h := &ExecHandle{conn: conn, events: make(chan ExecEvent, 64), closed: make(chan struct{})}
	h.stdin = &ExecSink{h: h}
	if !cfg.StdinPipe {
		if err := h.stdin.Close(); err != nil {
			h.Close()
			return nil, err
		}
		h.stdin = nil
	}
	go h.read()
	return h, nil
}

// ShellStream runs command with /bin/sh -c, streamed (see ExecStream).
func (s *Sandbox) ShellStream(ctx context.Context, command string, opts ...ExecOption) (*ExecHandle, error) {
	return s.ExecStream(ctx, "/bin/sh", []string{"-c", command}, opts...)
}
