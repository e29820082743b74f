package microsandbox

import (
	"path/filepath"
	"sort"
)

// StatVirtualization is the per-mount stat-virtualization policy of
// virtio-fs mounts (bind and named dir volumes): where the guest's owners
// and modes live. The zero value keeps the default (strict).
type StatVirtualization string

const (
	// StatVirtualizationDefault keeps the default (strict).
	StatVirtualizationDefault StatVirtualization = ""
	// StatVirtualizationStrict keeps guest owners and modes in a host
	// xattr record and refuses hosts without xattrs.
	StatVirtualizationStrict StatVirtualization = "strict"
	// StatVirtualizationRelaxed uses the records where the host supports
	// them.
	StatVirtualizationRelaxed StatVirtualization = "relaxed"
	// StatVirtualizationOff shows literal host metadata.
	StatVirtualizationOff StatVirtualization = "off"
)

// HostPermissions is the per-mount policy of whether guest chmod reaches
// the host inode (virtio-fs mounts only). The zero value keeps the default
// (private).
type HostPermissions string

const (
	// HostPermissionsDefault keeps the default (private).
	HostPermissionsDefault HostPermissions = ""
	// HostPermissionsPrivate keeps guest chmod in the metadata record only.
	HostPermissionsPrivate HostPermissions = "private"
	// HostPermissionsMirror copies the rwx bits to the host inode (never
	// setuid/setgid, never below owner access).
	HostPermissionsMirror HostPermissions = "mirror"
)

// MountKind discriminates the four mount flavours.
type MountKind uint8

const (
	// MountKindBind is a host bind mount.
	MountKindBind MountKind = iota + 1
	// MountKindNamed is a named persistent volume.
	MountKindNamed
	// MountKindTmpfs is an in-memory tmpfs.
	MountKindTmpfs
	// MountKindDisk is a host disk image.
	MountKindDisk
)

// String names the kind.
func (k MountKind) String() string {
	switch k {
	case MountKindBind:
		return "bind"
	case MountKindNamed:
		return "named"
	case MountKindTmpfs:
		return "tmpfs"
	case MountKindDisk:
		return "disk"
	}
	return "unset"
}

// MountConfig is one mount of WithMounts. Build it with the Mount factory,
// which sets the flavour; Kind reports it.
type MountConfig struct {
	kind MountKind

	// Bind is the host path of a bind mount.
	Bind string
	// Named is the volume name of a named mount.
	Named string
	// NamedMode is "existing" (default), "create" or "ensure-exists".
	NamedMode string
	// NamedKind is "dir" or "disk" for a volume a named mount creates.
	NamedKind string
	// QuotaMiB is the quota of a dir volume a named mount creates.
	QuotaMiB uint32
	// Tmpfs is set for tmpfs mounts.
	Tmpfs bool
	// Disk is the host path of a disk image.
	Disk string
	// Format is the disk image format ("raw", "qcow2", "vmdk").
	Format string
	// Fstype is the filesystem inside a disk image.
	Fstype string
	// Readonly mounts read-only.
	Readonly bool
	// Noexec forbids execution from the mount.
	Noexec bool
	// Nosuid ignores setuid and setgid bits.
	Nosuid bool
	// Nodev ignores device files.
	Nodev bool
	// SizeMiB is a tmpfs's size limit, or the capacity of a disk volume a
	// named mount creates.
	SizeMiB uint32
	// StatVirtualization is the stat-virtualization policy (bind and named
	// mounts only).
	StatVirtualization StatVirtualization
	// HostPermissions is the host-permission policy (bind and named mounts
	// only).
	HostPermissions HostPermissions
}

// Kind reports which flavour the mount is.
func (m MountConfig) Kind() MountKind { return m.kind }

// MountOptions tunes Mount.Bind, Mount.Named and Mount.NamedWith.
type MountOptions struct {
	// Readonly mounts read-only (virtio-fs mounts also refuse writes in
	// the host daemon).
	Readonly bool
	// Noexec forbids execution from the mount.
	Noexec bool
	// Nosuid ignores setuid and setgid bits.
	Nosuid bool
	// Nodev ignores device files.
	Nodev bool
	// StatVirtualization is the stat-virtualization policy.
	StatVirtualization StatVirtualization
	// HostPermissions is the host-permission policy.
	HostPermissions HostPermissions
}

// NamedVolumeOptions tunes sandbox-time provisioning of Mount.NamedWith.
type NamedVolumeOptions struct {
	// Mode is "existing", "create" or "ensure-exists"; empty is "existing".
	Mode string
	// Kind is "dir" or "disk"; empty is "dir".
	Kind string
	// SizeMiB is the capacity of a disk volume to create.
	SizeMiB uint32
	// QuotaMiB is the quota of a dir volume to create.
	QuotaMiB uint32
}

// TmpfsOptions tunes Mount.Tmpfs.
type TmpfsOptions struct {
	// SizeMiB is the size limit in MiB.
	SizeMiB uint32
	// Readonly mounts read-only.
	Readonly bool
	// Noexec forbids execution from the mount.
	Noexec bool
	// Nosuid ignores setuid and setgid bits.
	Nosuid bool
	// Nodev ignores device files.
	Nodev bool
}

// DiskOptions tunes Mount.Disk.
type DiskOptions struct {
	// Format is "raw", "qcow2" or "vmdk"; empty is raw.
	Format string
	// Fstype is the filesystem inside; empty means detected.
	Fstype string
	// Readonly mounts read-only.
	Readonly bool
	// Noexec forbids execution from the mount.
	Noexec bool
	// Nosuid ignores setuid and setgid bits.
	Nosuid bool
	// Nodev ignores device files.
	Nodev bool
}

// mountFactory is the type of Mount.
type mountFactory struct{}

// Mount builds MountConfig values: Mount.Bind, Mount.Named,
// Mount.NamedWith, Mount.Tmpfs, Mount.Disk.
var Mount mountFactory

func withFlags(m MountConfig, o MountOptions) MountConfig {
	m.Readonly, m.Noexec, m.Nosuid, m.Nodev = o.Readonly, o.Noexec, o.Nosuid, o.Nodev
	m.StatVirtualization, m.HostPermissions = o.StatVirtualization, o.HostPermissions
	return m
}

// Bind mounts a host directory; changes show on both sides. A relative
// path is taken from the current directory.
func (mountFactory) Bind(hostPath string, opts MountOptions) MountConfig {
	return withFlags(MountConfig{kind: MountKindBind, Bind: hostPath}, opts)
}

// Named mounts an existing named volume (create it with CreateVolume).
func (mountFactory) Named(name string, opts MountOptions) MountConfig {
	return withFlags(MountConfig{kind: MountKindNamed, Named: name}, opts)
}

// NamedWith mounts a named volume with sandbox-time existence behaviour:
// Mode "existing" (default), "create" (fails when it exists) or
// "ensure-exists" (creates it when missing, reuses a matching one, errors
// when an existing one has another kind, quota or capacity).
func (mountFactory) NamedWith(name string, opts MountOptions, namedOpts NamedVolumeOptions) MountConfig {
	m := withFlags(MountConfig{kind: MountKindNamed, Named: name}, opts)
	m.NamedMode, m.NamedKind = namedOpts.Mode, namedOpts.Kind
	m.SizeMiB, m.QuotaMiB = namedOpts.SizeMiB, namedOpts.QuotaMiB
	return m
}

// Tmpfs mounts an in-memory filesystem, gone when the sandbox stops.
func (mountFactory) Tmpfs(opts TmpfsOptions) MountConfig {
	return MountConfig{
		kind: MountKindTmpfs, Tmpfs: true, SizeMiB: opts.SizeMiB,
		Readonly: opts.Readonly, Noexec: opts.Noexec, Nosuid: opts.Nosuid, Nodev: opts.Nodev,
	}
}

// Disk attaches a host disk image (raw, qcow2, vmdk) as a virtio-blk
// device and mounts it. A relative path is taken from the current
// directory.
func (mountFactory) Disk(hostPath string, opts DiskOptions) MountConfig {
	return MountConfig{
		kind: MountKindDisk, Disk: hostPath, Format: opts.Format, Fstype: opts.Fstype,
		Readonly: opts.Readonly, Noexec: opts.Noexec, Nosuid: opts.Nosuid, Nodev: opts.Nodev,
	}
}

// wireMount is a mount as the API takes it.
type wireMount struct {
	Type               string `json:"type"`
	Path               string `json:"path"`
	Source             string `json:"source,omitempty"`
	Name               string `json:"name,omitempty"`
	Mode               string `json:"mode,omitempty"`
	Kind               string `json:"kind,omitempty"`
	SizeMiB            uint32 `json:"size_mib,omitempty"`
	QuotaMiB           uint32 `json:"quota_mib,omitempty"`
	Format             string `json:"format,omitempty"`
	Fstype             string `json:"fstype,omitempty"`
	Readonly           bool   `json:"readonly,omitempty"`
	Noexec             bool   `json:"noexec,omitempty"`
	Nosuid             bool   `json:"nosuid,omitempty"`
	Nodev              bool   `json:"nodev,omitempty"`
	StatVirtualization string `json:"stat_virtualization,omitempty"`
	HostPermissions    string `json:"host_permissions,omitempty"`
}

// flavour is the mount's kind: the factory's, or for a hand-made value the
// one field set among Bind, Named, Tmpfs and Disk.
func (m MountConfig) flavour(guest string) (MountKind, error) {
	set := []MountKind{}
	if m.Bind != "" {
		set = append(set, MountKindBind)
	}
	if m.Named != "" {
		set = append(set, MountKindNamed)
	}
	if m.Tmpfs {
		set = append(set, MountKindTmpfs)
	}
	if m.Disk != "" {
		set = append(set, MountKindDisk)
	}
	if len(set) != 1 {
		return 0, invalidConfig("mount %q: exactly one of Bind, Named, Tmpfs and Disk must be set (use the Mount factory)", guest)
	}
	if m.kind != 0 && m.kind != set[0] {
		return 0, invalidConfig("mount %q: a %s mount with %s fields set", guest, m.kind, set[0])
	}
	return set[0], nil
}

// wire checks the mount at guest path `guest` and gives its API form:
// StatVirtualization and HostPermissions are refused on tmpfs and disk
// mounts, as are fields of another flavour.
func (m MountConfig) wire(guest string) (wireMount, error) {
	kind, err := m.flavour(guest)
	if err != nil {
		return wireMount{}, err
	}
	w := wireMount{
		Type: kind.String(), Path: guest,
		Readonly: m.Readonly, Noexec: m.Noexec, Nosuid: m.Nosuid, Nodev: m.Nodev,
	}
	virtiofs := kind == MountKindBind || kind == MountKindNamed
	if !virtiofs && (m.StatVirtualization != "" || m.HostPermissions != "") {
		return w, invalidConfig("mount %q: StatVirtualization and HostPermissions apply only to bind and named mounts, not to %s mounts", guest, kind)
	}
	if virtiofs {
		w.StatVirtualization, w.HostPermissions = string(m.StatVirtualization), string(m.HostPermissions)
	}
	named := m.NamedMode != "" || m.NamedKind != "" || m.QuotaMiB != 0
	disk := m.Format != "" || m.Fstype != ""
	switch kind {
	case MountKindBind:
		if named || disk || m.SizeMiB != 0 {
			return w, invalidConfig("mount %q: a bind mount takes only MountOptions", guest)
		}
		w.Source, err = absolute(m.Bind)
	case MountKindNamed:
		if disk {
			return w, invalidConfig("mount %q: Format and Fstype are for disk mounts", guest)
		}
		w.Name, w.Mode, w.Kind, w.SizeMiB, w.QuotaMiB = m.Named, m.NamedMode, m.NamedKind, m.SizeMiB, m.QuotaMiB
	case MountKindTmpfs:
		if named || disk {
			return w, invalidConfig("mount %q: a tmpfs mount takes only TmpfsOptions", guest)
		}
		w.SizeMiB = m.SizeMiB
	case MountKindDisk:
		if named || m.SizeMiB != 0 {
			return w, invalidConfig("mount %q: a disk mount takes only DiskOptions", guest)
		}
		w.Format, w.Fstype = m.Format, m.Fstype
		w.Source, err = absolute(m.Disk)
	}
	return w, err
}

// absolute makes a host path absolute (the server has no working
// directory of ours).
func absolute(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", invalidConfig("host path %q: %v", p, err)
	}
	return a, nil
}

// wireMounts checks every mount and orders them by guest path, so a mount
// inside another comes after it.
func wireMounts(mounts map[string]MountConfig) ([]wireMount, error) {
	guests := make([]string, 0, len(mounts))
	for g := range mounts {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	out := make([]wireMount, 0, len(guests))
	for _, g := range guests {
		w, err := mounts[g].wire(g)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}
