package microsandbox

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// ExecConfig configures one Exec or ExecStream.
type ExecConfig struct {
	// Cwd is the working directory (an absolute guest path).
	Cwd string
	// Timeout kills the command after this long (rounded up to seconds).
	Timeout time.Duration
	// StdinPipe opens stdin for ExecHandle.TakeStdin (ExecStream only).
	StdinPipe bool
	// User is "UID" or "UID:GID" (numbers).
	User string
	// Env adds environment variables.
	Env map[string]string
	// Stdin is fed to the command's stdin (Exec only).
	Stdin []byte
}

// ExecOption is a functional option of Exec and ExecStream.
type ExecOption func(*ExecConfig)

// WithExecCwd sets the command's working directory.
func WithExecCwd(path string) ExecOption {
	return func(c *ExecConfig) { c.Cwd = path }
}

// WithExecTimeout kills the command after d; Exec then returns its output
// with an error of kind ErrExecTimeout.
func WithExecTimeout(d time.Duration) ExecOption {
	return func(c *ExecConfig) { c.Timeout = d }
}

// WithExecStdinPipe opens stdin for ExecHandle.TakeStdin.
func WithExecStdinPipe() ExecOption {
	return func(c *ExecConfig) { c.StdinPipe = true }
}

// WithExecUser runs the command as "UID" or "UID:GID".
func WithExecUser(user string) ExecOption {
	return func(c *ExecConfig) { c.User = user }
}

// WithExecEnv adds environment variables; called repeatedly, the maps
// merge and later keys overwrite earlier ones.
func WithExecEnv(env map[string]string) ExecOption {
	return func(c *ExecConfig) {
		if c.Env == nil {
			c.Env = make(map[string]string, len(env))
		}
		for k, v := range env {
			c.Env[k] = v
		}
	}
}

// WithExecStdin feeds data to the command's stdin (Exec).
func WithExecStdin(data []byte) ExecOption {
	return func(c *ExecConfig) { c.Stdin = append([]byte(nil), data...) }
}

// execRequest is the body of the exec endpoints.
type execRequest struct {
	Command     []string          `json:"command"`
	Env         map[string]string `json:"env,omitempty"`
	Workdir     string            `json:"workdir,omitempty"`
	UID         *uint32           `json:"uid,omitempty"`
	GID         *uint32           `json:"gid,omitempty"`
	StdinBase64 string            `json:"stdin_base64,omitempty"`
	TimeoutSecs uint64            `json:"timeout_secs,omitempty"`
	Output      string            `json:"output,omitempty"`
}

// exitInfo is how a command ended, as the API says it.
type exitInfo struct {
	ExitCode int     `json:"exit_code"`
	Signal   *int    `json:"signal"`
	TimedOut bool    `json:"timed_out"`
	Error    *string `json:"error"`
}

// execResult is the answer of /exec.
type execResult struct {
	exitInfo
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Truncated bool   `json:"truncated"`
}

// buildExec checks cmd, args and options and gives the request.
func buildExec(cmd string, args []string, cfg ExecConfig) (execRequest, error) {
	if cmd == "" {
		return execRequest{}, invalid("exec: the command is empty")
	}
	req := execRequest{Command: append([]string{cmd}, args...), Env: cfg.Env, Workdir: cfg.Cwd}
	if cfg.Timeout > 0 {
		req.TimeoutSecs = uint64((cfg.Timeout + time.Second - 1) / time.Second)
	}
	if cfg.User != "" {
		u, g, ok := strings.Cut(cfg.User, ":")
		uid, err := strconv.ParseUint(u, 10, 32)
		if err != nil {
			return req, invalid("exec user %q: give UID or UID:GID as numbers", cfg.User)
		}
		u32 := uint32(uid)
		req.UID = &u32
		if ok {
			gid, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return req, invalid("exec user %q: give UID or UID:GID as numbers", cfg.User)
			}
			g32 := uint32(gid)
			req.GID = &g32
		}
	}
	return req, nil
}

// ExecOutput is the collected result of a command. A non-zero exit code is
// not an error: read ExitCode or Success.
type ExecOutput struct {
	stdout   []byte
	stderr   []byte
	exitCode int
}

// Stdout returns the standard output as a string.
func (e *ExecOutput) Stdout() string { return string(e.stdout) }

// StdoutBytes returns the standard output.
func (e *ExecOutput) StdoutBytes() []byte { return e.stdout }

// Stderr returns the standard error as a string.
func (e *ExecOutput) Stderr() string { return string(e.stderr) }

// StderrBytes returns the standard error.
func (e *ExecOutput) StderrBytes() []byte { return e.stderr }

// ExitCode returns the exit code: the command's own, 128+N when signal N
// killed it, 124 after a timeout, 126/127 when it could not run.
func (e *ExecOutput) ExitCode() int { return e.exitCode }

// Success reports whether the command exited with 0.
func (e *ExecOutput) Success() bool { return e.exitCode == 0 }

// endError is the error of an ending that is not a plain exit: a timeout
// (ErrExecTimeout) or a command that could not start (ErrExecFailed is not
// used for that: the exit code, 126 or 127, says it).
func endError(x exitInfo) error {
	if x.TimedOut {
		return &Error{Kind: ErrExecTimeout, Message: "the command ran past its timeout and was killed"}
	}
	return nil
}

// Exec runs cmd with args in the sandbox and collects its output. The
// error is non-nil only when the command could not be run or relayed, or
// ran past WithExecTimeout (then the output so far comes with it).
func (s *Sandbox) Exec(ctx context.Context, cmd string, args []string, opts ...ExecOption) (*ExecOutput, error) {
	cfg := ExecConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	req, err := buildExec(cmd, args, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Stdin != nil {
		req.StdinBase64 = base64.StdEncoding.EncodeToString(cfg.Stdin)
	}
	req.Output = "base64"
	var r execResult
	if err := s.c.call(ctx, "POST", "/v1/sandboxes/"+pathName(s.name)+"/exec", req, &r); err != nil {
		return nil, err
	}
	stdout, err1 := base64.StdEncoding.DecodeString(r.Stdout)
	stderr, err2 := base64.StdEncoding.DecodeString(r.Stderr)
	if err1 != nil || err2 != nil {
		return nil, &Error{Kind: ErrInternal, Message: "exec: the answer's output is not base64"}
	}
	out := &ExecOutput{stdout: stdout, stderr: stderr, exitCode: r.ExitCode}
	return out, endError(r.exitInfo)
}

// Shell runs command with /bin/sh -c and collects its output.
func (s *Sandbox) Shell(ctx context.Context, command string, opts ...ExecOption) (*ExecOutput, error) {
	return s.Exec(ctx, "/bin/sh", []string{"-c", command}, opts...)
}
