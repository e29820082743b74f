package microsandbox

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestMountFactorySetsTheKind(t *testing.T) {
	cases := []struct {
		m    MountConfig
		kind MountKind
	}{
		{Mount.Bind("/var/data", MountOptions{Readonly: true}), MountKindBind},
		{Mount.Named("my-data", MountOptions{}), MountKindNamed},
		{Mount.NamedWith("pip-cache", MountOptions{}, NamedVolumeOptions{Mode: "ensure-exists"}), MountKindNamed},
		{Mount.Tmpfs(TmpfsOptions{SizeMiB: 128}), MountKindTmpfs},
		{Mount.Disk("./data.qcow2", DiskOptions{Format: "qcow2", Fstype: "ext4", Readonly: true}), MountKindDisk},
	}
	for _, c := range cases {
		if c.m.Kind() != c.kind {
			t.Errorf("%+v: Kind() = %v, want %v", c.m, c.m.Kind(), c.kind)
		}
	}
	if (MountConfig{}).Kind() != 0 {
		t.Error("a hand-made MountConfig has no kind")
	}
}

func TestMountsBecomeTheAPIsJSON(t *testing.T) {
	cwd, _ := os.Getwd()
	mounts := map[string]MountConfig{
		"/host": Mount.Bind("/var/data", MountOptions{Readonly: true, StatVirtualization: StatVirtualizationRelaxed, HostPermissions: HostPermissionsMirror}),
		"/data": Mount.Named("my-data", MountOptions{Noexec: true}),
		"/var/lib/docker": Mount.NamedWith("docker-data", MountOptions{}, NamedVolumeOptions{
			Mode: "ensure-exists", Kind: "disk", SizeMiB: 20 * 1024,
		}),
		"/scratch": Mount.Tmpfs(TmpfsOptions{SizeMiB: 128, Nosuid: true}),
		"/img":     Mount.Disk("./data.qcow2", DiskOptions{Format: "qcow2", Fstype: "ext4", Readonly: true}),
	}
	wire, err := wireMounts(mounts)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(wire)
	want := `[{"type":"named","path":"/data","name":"my-data","noexec":true},` +
		`{"type":"bind","path":"/host","source":"/var/data","readonly":true,"stat_virtualization":"relaxed","host_permissions":"mirror"},` +
		`{"type":"disk","path":"/img","source":"` + filepath.Join(cwd, "data.qcow2") + `","format":"qcow2","fstype":"ext4","readonly":true},` +
		`{"type":"tmpfs","path":"/scratch","size_mib":128,"nosuid":true},` +
		`{"type":"named","path":"/var/lib/docker","name":"docker-data","mode":"ensure-exists","kind":"disk","size_mib":20480}]`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestVirtiofsPoliciesAreRejectedOnTmpfsAndDiskAtBuildTime(t *testing.T) {
	bad := map[string]MountConfig{
		"tmpfs + stat virtualization": {Tmpfs: true, StatVirtualization: StatVirtualizationOff},
		"tmpfs + host permissions":    {Tmpfs: true, HostPermissions: HostPermissionsMirror},
		"disk + stat virtualization":  {Disk: "/d.raw", StatVirtualization: StatVirtualizationStrict},
		"disk + host permissions":     {Disk: "/d.raw", HostPermissions: HostPermissionsPrivate},
		"two flavours":                {Bind: "/a", Named: "b"},
		"no flavour":                  {Readonly: true},
		"factory kind, other fields":  withKind(Mount.Tmpfs(TmpfsOptions{}), "x"),
		"tmpfs + named fields":        {Tmpfs: true, NamedMode: "create"},
		"bind + disk fields":          {Bind: "/a", Format: "raw"},
	}
	for what, m := range bad {
		_, err := m.wire("/x")
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", what, err)
		}
	}
	// A hand-made value of one flavour is fine.
	if _, err := (MountConfig{Named: "data", Readonly: true}).wire("/x"); err != nil {
		t.Errorf("hand-made named mount: %v", err)
	}
}

// withKind sets Named on a factory-made value, making it inconsistent.
func withKind(m MountConfig, named string) MountConfig {
	m.Named = named
	return m
}

func TestOptionsMerge(t *testing.T) {
	cfg := VolumeConfig{}
	for _, o := range []VolumeOption{
		WithVolumeLabels(map[string]string{"env": "dev", "team": "a"}),
		WithVolumeLabels(map[string]string{"env": "prod"}),
		WithVolumeQuota(64), WithVolumeKind(VolumeKindDisk), WithVolumeSize(20 * 1024),
	} {
		o(&cfg)
	}
	if cfg.Labels["env"] != "prod" || cfg.Labels["team"] != "a" || len(cfg.Labels) != 2 {
		t.Errorf("labels %v", cfg.Labels)
	}
	if cfg.QuotaMiB != 64 || cfg.Kind != VolumeKindDisk || cfg.SizeMiB != 20480 {
		t.Errorf("config %+v", cfg)
	}
	sc := SandboxConfig{}
	WithMounts(map[string]MountConfig{"/a": Mount.Tmpfs(TmpfsOptions{})})(&sc)
	WithMounts(map[string]MountConfig{"/b": Mount.Tmpfs(TmpfsOptions{})})(&sc)
	WithEnv(map[string]string{"A": "1"})(&sc)
	WithEnv(map[string]string{"A": "2", "B": "3"})(&sc)
	if len(sc.Volumes) != 2 || sc.Env["A"] != "2" || sc.Env["B"] != "3" {
		t.Errorf("sandbox config %+v", sc)
	}
}
