package microsandbox

import (
	"context"
	"time"
)

// VolumeKind describes the storage backing of a named volume.
type VolumeKind string

const (
	// VolumeKindDir is a directory-backed named volume.
	VolumeKindDir VolumeKind = "dir"
	// VolumeKindDisk is a raw ext4 disk-backed named volume.
	VolumeKindDisk VolumeKind = "disk"
)

// VolumeConfig is what the VolumeOption functions fill in; CreateVolume
// sends it.
type VolumeConfig struct {
	// QuotaMiB is the storage budget of a dir volume in MiB; 0 is unlimited.
	QuotaMiB uint32
	// Kind is VolumeKindDir (default) or VolumeKindDisk.
	Kind VolumeKind
	// SizeMiB is the capacity of a disk volume in MiB (required for disks).
	SizeMiB uint32
	// Labels are metadata labels.
	Labels map[string]string
}

// VolumeOption is a functional option of CreateVolume.
type VolumeOption func(*VolumeConfig)

// WithVolumeKind selects the kind: VolumeKindDir (default) or
// VolumeKindDisk.
func WithVolumeKind(kind VolumeKind) VolumeOption {
	return func(c *VolumeConfig) { c.Kind = kind }
}

// WithVolumeSize sets the capacity of a disk volume in MiB (required for
// VolumeKindDisk).
func WithVolumeSize(mebibytes uint32) VolumeOption {
	return func(c *VolumeConfig) { c.SizeMiB = mebibytes }
}

// WithVolumeQuota sets the quota of a dir volume in MiB; zero is unlimited.
func WithVolumeQuota(mebibytes uint32) VolumeOption {
	return func(c *VolumeConfig) { c.QuotaMiB = mebibytes }
}

// WithVolumeLabels attaches labels; called repeatedly, the maps merge and
// later keys overwrite earlier ones.
func WithVolumeLabels(labels map[string]string) VolumeOption {
	return func(c *VolumeConfig) {
		if c.Labels == nil {
			c.Labels = make(map[string]string, len(labels))
		}
		for k, v := range labels {
			c.Labels[k] = v
		}
	}
}

// wireVolume is a volume as the API shows it.
type wireVolume struct {
	Name          string            `json:"name"`
	Path          string            `json:"path"`
	Kind          VolumeKind        `json:"kind"`
	QuotaMiB      *uint32           `json:"quota_mib"`
	UsedBytes     uint64            `json:"used_bytes"`
	CapacityBytes *uint64           `json:"capacity_bytes"`
	DiskFormat    *string           `json:"disk_format"`
	DiskFstype    *string           `json:"disk_fstype"`
	Labels        map[string]string `json:"labels"`
	CreatedAt     string            `json:"created_at"`
}

// createVolumeRequest is the body of POST /v1/volumes.
type createVolumeRequest struct {
	Name     string            `json:"name"`
	Kind     VolumeKind        `json:"kind,omitempty"`
	QuotaMiB uint32            `json:"quota_mib,omitempty"`
	SizeMiB  uint32            `json:"size_mib,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// Volume is a named persistent volume with its host path, as
// CreateVolume returns it.
type Volume struct {
	c    *Client
	name string
	path string
}

// Name returns the volume's name.
func (v *Volume) Name() string { return v.name }

// Path returns the host path of the volume's data directory.
func (v *Volume) Path() string { return v.path }

// FS returns host-side file access to the volume.
func (v *Volume) FS() *VolumeFs { return &VolumeFs{c: v.c, name: v.name, root: v.path} }

// Remove deletes the volume (every sandbox using it must be stopped);
// the same as RemoveVolume(ctx, v.Name()).
func (v *Volume) Remove(ctx context.Context) error { return v.c.RemoveVolume(ctx, v.name) }

// VolumeHandle is a volume's metadata, as GetVolume and ListVolumes
// return it.
type VolumeHandle struct {
	c *Client
	w wireVolume
}

// Name returns the volume name.
func (h *VolumeHandle) Name() string { return h.w.Name }

// Path returns the host path of the volume's data directory.
func (h *VolumeHandle) Path() string { return h.w.Path }

// Kind returns VolumeKindDir or VolumeKindDisk.
func (h *VolumeHandle) Kind() VolumeKind { return h.w.Kind }

// QuotaMiB returns the quota in MiB, or nil when unlimited.
func (h *VolumeHandle) QuotaMiB() *uint32 { return h.w.QuotaMiB }

// UsedBytes returns the space the volume uses, in bytes.
func (h *VolumeHandle) UsedBytes() uint64 { return h.w.UsedBytes }

// CapacityBytes returns a disk volume's capacity in bytes, nil for a dir
// volume.
func (h *VolumeHandle) CapacityBytes() *uint64 { return h.w.CapacityBytes }

// DiskFormat returns a disk volume's image format, nil for a dir volume.
func (h *VolumeHandle) DiskFormat() *string { return h.w.DiskFormat }

// DiskFstype returns a disk volume's filesystem type, nil for a dir volume.
func (h *VolumeHandle) DiskFstype() *string { return h.w.DiskFstype }

// Labels returns the volume's labels (a copy).
func (h *VolumeHandle) Labels() map[string]string {
	out := make(map[string]string, len(h.w.Labels))
	for k, v := range h.w.Labels {
		out[k] = v
	}
	return out
}

// CreatedAt returns the creation time, or the zero time when unknown.
func (h *VolumeHandle) CreatedAt() time.Time { return parseTime(h.w.CreatedAt) }

// FS returns host-side file access to the volume.
func (h *VolumeHandle) FS() *VolumeFs { return &VolumeFs{c: h.c, name: h.w.Name, root: h.w.Path} }

// Remove deletes the volume (every sandbox using it must be stopped);
// the same as RemoveVolume(ctx, h.Name()).
func (h *VolumeHandle) Remove(ctx context.Context) error { return h.c.RemoveVolume(ctx, h.w.Name) }

// CreateVolume creates a named volume; ErrVolumeAlreadyExists when the
// name is taken.
func CreateVolume(ctx context.Context, name string, opts ...VolumeOption) (*Volume, error) {
	return defaultClient().CreateVolume(ctx, name, opts...)
}

// GetVolume returns a volume's metadata; ErrVolumeNotFound when there is
// no such volume.
func GetVolume(ctx context.Context, name string) (*VolumeHandle, error) {
	return defaultClient().GetVolume(ctx, name)
}

// ListVolumes returns the metadata of every named volume.
func ListVolumes(ctx context.Context) ([]*VolumeHandle, error) {
	return defaultClient().ListVolumes(ctx)
}

// RemoveVolume deletes a volume and its data; every sandbox using it must
// be stopped (else ErrVolumeInUse).
func RemoveVolume(ctx context.Context, name string) error {
	return defaultClient().RemoveVolume(ctx, name)
}

// CreateVolume is the package-level CreateVolume on this client.
func (c *Client) CreateVolume(ctx context.Context, name string, opts ...VolumeOption) (*Volume, error) {
	cfg := VolumeConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	req := createVolumeRequest{
		Name:     name,
		Kind:     cfg.Kind,
		QuotaMiB: cfg.QuotaMiB,
		SizeMiB:  cfg.SizeMiB,
		Labels:   cfg.Labels,
	}
	var w wireVolume
	if err := c.call(ctx, "POST", "/v1/volumes", req, &w); err != nil {
		return nil, err
	}
	return &Volume{c: c, name: w.Name, path: w.Path}, nil
}

// GetVolume is the package-level GetVolume on this client.
func (c *Client) GetVolume(ctx context.Context, name string) (*VolumeHandle, error) {
	if name == "" {
		return nil, invalid("volume name is empty")
	}
	var w wireVolume
	if err := c.call(ctx, "GET", "/v1/volumes/"+pathName(name), nil, &w); err != nil {
		return nil, err
	}
	return &VolumeHandle{c: c, w: w}, nil
}

// ListVolumes is the package-level ListVolumes on this client.
func (c *Client) ListVolumes(ctx context.Context) ([]*VolumeHandle, error) {
	var ws []wireVolume
	if err := c.call(ctx, "GET", "/v1/volumes", nil, &ws); err != nil {
		return nil, err
	}
	out := make([]*VolumeHandle, len(ws))
	for i := range ws {
		out[i] = &VolumeHandle{c: c, w: ws[i]}
	}
	return out, nil
}

// RemoveVolume is the package-level RemoveVolume on this client.
func (c *Client) RemoveVolume(ctx context.Context, name string) error {
	if name == "" {
		return invalid("volume name is empty")
	}
	return c.call(ctx, "DELETE", "/v1/volumes/"+pathName(name), nil, nil)
}
