package microsandbox

import (
	"context"
	"time"
)

// SandboxStatus is a sandbox's lifecycle state.
type SandboxStatus string

const (
	// SandboxStatusStarting: its supervisor is booting the VM.
	SandboxStatusStarting SandboxStatus = "starting"
	// SandboxStatusRunning: up and taking commands.
	SandboxStatusRunning SandboxStatus = "running"
	// SandboxStatusUnhealthy: up, but its agent stopped answering.
	SandboxStatusUnhealthy SandboxStatus = "unhealthy"
	// SandboxStatusStopping: shutting down.
	SandboxStatusStopping SandboxStatus = "stopping"
	// SandboxStatusStopped: not running.
	SandboxStatusStopped SandboxStatus = "stopped"
	// SandboxStatusCrashed: its VM or supervisor died; Start brings it back.
	SandboxStatusCrashed SandboxStatus = "crashed"
)

// SandboxConfig is what the SandboxOption functions fill in.
type SandboxConfig struct {
	// Image is the OCI image of the root (pulled when missing); empty is
	// msb's embedded root (msb-init + busybox).
	Image string
	// MemoryMiB is the guest memory in MiB (0: default 512).
	MemoryMiB uint32
	// CPUs is the number of vCPUs (0: default 1).
	CPUs uint8
	// Workdir is the working directory of commands.
	Workdir string
	// Env is the environment of every command.
	Env map[string]string
	// Volumes maps guest paths to mounts.
	Volumes map[string]MountConfig
}

// SandboxOption is a functional option of CreateSandbox.
type SandboxOption func(*SandboxConfig)

// WithImage sets the OCI image of the root filesystem (e.g. "alpine").
func WithImage(image string) SandboxOption {
	return func(c *SandboxConfig) { c.Image = image }
}

// WithMounts attaches mounts (guest path → Mount.*); called repeatedly, the
// maps merge.
func WithMounts(mounts map[string]MountConfig) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Volumes == nil {
			c.Volumes = make(map[string]MountConfig, len(mounts))
		}
		for k, v := range mounts {
			c.Volumes[k] = v
		}
	}
}

// WithMemory sets the guest memory in MiB (default 512).
func WithMemory(mebibytes uint32) SandboxOption {
	return func(c *SandboxConfig) { c.MemoryMiB = mebibytes }
}

// WithCPUs sets the number of vCPUs (default 1).
func WithCPUs(cpus uint8) SandboxOption {
	return func(c *SandboxConfig) { c.CPUs = cpus }
}

// WithWorkdir sets the working directory of commands (an absolute guest
// path).
func WithWorkdir(path string) SandboxOption {
	return func(c *SandboxConfig) { c.Workdir = path }
}

// WithEnv adds environment variables of every command; called repeatedly,
// the maps merge and later keys overwrite earlier ones.
func WithEnv(env map[string]string) SandboxOption {
	return func(c *SandboxConfig) {
		if c.Env == nil {
			c.Env = make(map[string]string, len(env))
		}
		for k, v := range env {
			c.Env[k] = v
		}
	}
}

// createSandboxRequest is the body of POST /v1/sandboxes.
type createSandboxRequest struct {
	Name      string            `json:"name"`
	Image     string            `json:"image,omitempty"`
	Mounts    []wireMount       `json:"mounts,omitempty"`
	CPUs      uint8             `json:"cpus,omitempty"`
	MemoryMiB uint32            `json:"memory_mib,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Workdir   string            `json:"workdir,omitempty"`
}

// wireSandbox is a sandbox as the API shows it.
type wireSandbox struct {
	Name          string   `json:"name"`
	Image         *string  `json:"image"`
	Status        string   `json:"status"`
	Reason        *string  `json:"reason"`
	CreatedAt     string   `json:"created_at"`
	StartedAt     *string  `json:"started_at"`
	SupervisorPID *int     `json:"supervisor_pid"`
	Mounts        []string `json:"mounts"`
}

// Sandbox is a sandbox that stays up, owned by its supervisor process on
// the host (not by this program, nor by the server): it keeps running
// until Stop, Kill or Remove.
type Sandbox struct {
	c    *Client
	name string
}

// Name returns the sandbox's name.
func (s *Sandbox) Name() string { return s.name }

// Info returns the sandbox's current metadata.
func (s *Sandbox) Info(ctx context.Context) (*SandboxHandle, error) {
	return s.c.GetSandbox(ctx, s.name)
}

// Stop shuts the sandbox down cleanly (processes get SIGTERM, disks are
// unmounted).
func (s *Sandbox) Stop(ctx context.Context) error { return s.c.stopSandbox(ctx, s.name, false) }

// Kill stops the sandbox's VM at once.
func (s *Sandbox) Kill(ctx context.Context) error { return s.c.stopSandbox(ctx, s.name, true) }

// Start boots the stopped sandbox again with the configuration it was
// created with.
func (s *Sandbox) Start(ctx context.Context) error {
	_, err := s.c.StartSandbox(ctx, s.name)
	return err
}

// Remove stops the sandbox if it runs and deletes it.
func (s *Sandbox) Remove(ctx context.Context) error { return s.c.removeSandbox(ctx, s.name, true) }

// Close releases nothing: the sandbox belongs to its supervisor and keeps
// running; it is here so a Sandbox can be used where an io.Closer is
// expected.
func (s *Sandbox) Close() error { return nil }

// SandboxHandle is a sandbox's metadata, as GetSandbox and ListSandboxes
// return it.
type SandboxHandle struct {
	c *Client
	w wireSandbox
}

// Name returns the sandbox name.
func (h *SandboxHandle) Name() string { return h.w.Name }

// Status returns the sandbox's status when it was fetched.
func (h *SandboxHandle) Status() SandboxStatus { return SandboxStatus(h.w.Status) }

// Reason says why it is in its status (a crash, an unhealthy agent), or "".
func (h *SandboxHandle) Reason() string {
	if h.w.Reason == nil {
		return ""
	}
	return *h.w.Reason
}

// Image returns the image reference it was created from, or "".
func (h *SandboxHandle) Image() string {
	if h.w.Image == nil {
		return ""
	}
	return *h.w.Image
}

// Mounts returns its mounts in the CLI's grammar.
func (h *SandboxHandle) Mounts() []string { return append([]string(nil), h.w.Mounts...) }

// CreatedAt returns the creation time, or the zero time when unknown.
func (h *SandboxHandle) CreatedAt() time.Time { return parseTime(h.w.CreatedAt) }

// StartedAt returns when its current or last run started, or the zero time.
func (h *SandboxHandle) StartedAt() time.Time {
	if h.w.StartedAt == nil {
		return time.Time{}
	}
	return parseTime(*h.w.StartedAt)
}

// Connect returns the live sandbox; ErrSandboxNotRunning when it is not
// running.
func (h *SandboxHandle) Connect(ctx context.Context) (*Sandbox, error) {
	fresh, err := h.c.GetSandbox(ctx, h.w.Name)
	if err != nil {
		return nil, err
	}
	if fresh.Status() != SandboxStatusRunning && fresh.Status() != SandboxStatusUnhealthy {
		return nil, &Error{Kind: ErrSandboxNotRunning, Message: "sandbox " + h.w.Name + " is " + string(fresh.Status())}
	}
	return &Sandbox{c: h.c, name: h.w.Name}, nil
}

// Start boots the stopped sandbox and returns it.
func (h *SandboxHandle) Start(ctx context.Context) (*Sandbox, error) {
	return h.c.StartSandbox(ctx, h.w.Name)
}

// Stop shuts the sandbox down cleanly.
func (h *SandboxHandle) Stop(ctx context.Context) error { return h.c.stopSandbox(ctx, h.w.Name, false) }

// Kill stops the sandbox's VM at once.
func (h *SandboxHandle) Kill(ctx context.Context) error { return h.c.stopSandbox(ctx, h.w.Name, true) }

// Remove deletes the sandbox; ErrSandboxStillRunning while it runs.
func (h *SandboxHandle) Remove(ctx context.Context) error {
	return h.c.removeSandbox(ctx, h.w.Name, false)
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// CreateSandbox creates a sandbox and boots it; it returns once the
// sandbox takes commands. Mounts are checked first (StatVirtualization or
// HostPermissions on a tmpfs or disk mount is ErrInvalidConfig, before
// anything is sent); when it fails nothing is left behind.
func CreateSandbox(ctx context.Context, name string, opts ...SandboxOption) (*Sandbox, error) {
	return defaultClient().CreateSandbox(ctx, name, opts...)
}

// GetSandbox returns a sandbox's metadata; ErrSandboxNotFound when there
// is none.
func GetSandbox(ctx context.Context, name string) (*SandboxHandle, error) {
	return defaultClient().GetSandbox(ctx, name)
}

// ListSandboxes returns every sandbox's metadata.
func ListSandboxes(ctx context.Context) ([]*SandboxHandle, error) {
	return defaultClient().ListSandboxes(ctx)
}

// StartSandbox boots a stopped sandbox by name.
func StartSandbox(ctx context.Context, name string) (*Sandbox, error) {
	return defaultClient().StartSandbox(ctx, name)
}

// RemoveSandbox deletes a stopped sandbox by name; ErrSandboxStillRunning
// while it runs.
func RemoveSandbox(ctx context.Context, name string) error {
	return defaultClient().removeSandbox(ctx, name, false)
}

// CreateSandbox is the package-level CreateSandbox on this client.
func (c *Client) CreateSandbox(ctx context.Context, name string, opts ...SandboxOption) (*Sandbox, error) {
	cfg := SandboxConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	mounts, err := wireMounts(cfg.Volumes)
	if err != nil {
		return nil, err
	}
	req := createSandboxRequest{
		Name: name, Image: cfg.Image, Mounts: mounts, CPUs: cfg.CPUs,
		MemoryMiB: cfg.MemoryMiB, Env: cfg.Env, Workdir: cfg.Workdir,
	}
	if err := c.call(ctx, "POST", "/v1/sandboxes", req, nil); err != nil {
		return nil, err
	}
	return &Sandbox{c: c, name: name}, nil
}

// GetSandbox is the package-level GetSandbox on this client.
func (c *Client) GetSandbox(ctx context.Context, name string) (*SandboxHandle, error) {
	if name == "" {
		return nil, invalid("sandbox name is empty")
	}
	var w wireSandbox
	if err := c.call(ctx, "GET", "/v1/sandboxes/"+pathName(name), nil, &w); err != nil {
		return nil, err
	}
	return &SandboxHandle{c: c, w: w}, nil
}

// ListSandboxes is the package-level ListSandboxes on this client.
func (c *Client) ListSandboxes(ctx context.Context) ([]*SandboxHandle, error) {
	var ws []wireSandbox
	if err := c.call(ctx, "GET", "/v1/sandboxes", nil, &ws); err != nil {
		return nil, err
	}
	out := make([]*SandboxHandle, len(ws))
	for i := range ws {
		out[i] = &SandboxHandle{c: c, w: ws[i]}
	}
	return out, nil
}

// StartSandbox is the package-level StartSandbox on this client.
func (c *Client) StartSandbox(ctx context.Context, name string) (*Sandbox, error) {
	if name == "" {
		return nil, invalid("sandbox name is empty")
	}
	if err := c.call(ctx, "POST", "/v1/sandboxes/"+pathName(name)+"/start", nil, nil); err != nil {
		return nil, err
	}
	return &Sandbox{c: c, name: name}, nil
}

// RemoveSandbox is the package-level RemoveSandbox on this client.
func (c *Client) RemoveSandbox(ctx context.Context, name string) error {
	return c.removeSandbox(ctx, name, false)
}

func (c *Client) stopSandbox(ctx context.Context, name string, force bool) error {
	q := ""
	if force {
		q = query("force", "true")
	}
	return c.call(ctx, "POST", "/v1/sandboxes/"+pathName(name)+"/stop"+q, nil, nil)
}

func (c *Client) removeSandbox(ctx context.Context, name string, force bool) error {
	if name == "" {
		return invalid("sandbox name is empty")
	}
	q := ""
	if force {
		q = query("force", "true")
	}
	return c.call(ctx, "DELETE", "/v1/sandboxes/"+pathName(name)+q, nil, nil)
}
