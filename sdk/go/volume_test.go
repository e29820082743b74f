package microsandbox

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The host half of the seed's typical flow, and every VolumeHandle field
// of a dir volume.
func TestTypicalFlowOnTheHost(t *testing.T) {
	ctx := ctxFor(t)
	name := uniqueName("my-data")
	before := time.Now().Add(-2 * time.Second)
	vol, err := CreateVolume(ctx, name,
		WithVolumeQuota(64),
		WithVolumeLabels(map[string]string{"env": "dev", "team": "infra"}),
		WithVolumeLabels(map[string]string{"env": "prod"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Remove(ctx)
	if vol.Name() != name || filepath.Base(vol.Path()) != name || !filepath.IsAbs(vol.Path()) {
		t.Fatalf("volume %q at %q", vol.Name(), vol.Path())
	}
	vfs := vol.FS()
	if vfs.Root() != vol.Path() {
		t.Errorf("Root %q, Path %q", vfs.Root(), vol.Path())
	}
	if err := vfs.WriteString("seed.txt", "hello"); err != nil {
		t.Fatal(err)
	}
	if got, err := vfs.ReadString("seed.txt"); err != nil || got != "hello" {
		t.Fatalf("ReadString: %q, %v", got, err)
	}
	onHost, err := os.ReadFile(filepath.Join(vol.Path(), "seed.txt"))
	if err != nil || string(onHost) != "hello" {
		t.Fatalf("on the host: %q, %v", onHost, err)
	}

	h, err := GetVolume(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if h.Name() != name || h.Path() != vol.Path() || h.Kind() != VolumeKindDir {
		t.Errorf("name %q path %q kind %q", h.Name(), h.Path(), h.Kind())
	}
	if q := h.QuotaMiB(); q == nil || *q != 64 {
		t.Errorf("QuotaMiB %v", q)
	}
	if h.UsedBytes() < 5 {
		t.Errorf("UsedBytes %d", h.UsedBytes())
	}
	if h.CapacityBytes() != nil || h.DiskFormat() != nil || h.DiskFstype() != nil {
		t.Errorf("a dir volume has no disk fields: %v %v %v", h.CapacityBytes(), h.DiskFormat(), h.DiskFstype())
	}
	if l := h.Labels(); len(l) != 2 || l["env"] != "prod" || l["team"] != "infra" {
		t.Errorf("Labels %v", l)
	}
	if c := h.CreatedAt(); c.Before(before) || c.After(time.Now().Add(2*time.Second)) {
		t.Errorf("CreatedAt %v", c)
	}
	if got, err := h.FS().ReadString("seed.txt"); err != nil || got != "hello" {
		t.Errorf("handle FS: %q, %v", got, err)
	}
	all, err := ListVolumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range all {
		found = found || (v.Name() == name && v.Kind() == VolumeKindDir)
	}
	if !found {
		t.Errorf("ListVolumes misses %s", name)
	}
	if err := h.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	mustKind(t, "GetVolume after Remove", func() error { _, err := GetVolume(ctx, name); return err }(), ErrVolumeNotFound)
	if _, err := os.Stat(vol.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("data left at %s: %v", vol.Path(), err)
	}
}

// Every VolumeHandle field of a disk volume; no host file access to it.
func TestDiskVolumeFields(t *testing.T) {
	ctx := ctxFor(t)
	name := uniqueName("disk")
	if _, err := CreateVolume(ctx, name, WithVolumeKind(VolumeKindDisk), WithVolumeSize(16)); err != nil {
		t.Fatal(err)
	}
	defer RemoveVolume(ctx, name)
	h, err := GetVolume(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if h.Kind() != VolumeKindDisk || h.QuotaMiB() != nil {
		t.Errorf("kind %q quota %v", h.Kind(), h.QuotaMiB())
	}
	if c := h.CapacityBytes(); c == nil || *c != 16<<20 {
		t.Errorf("CapacityBytes %v", c)
	}
	if f := h.DiskFormat(); f == nil || *f != "raw" {
		t.Errorf("DiskFormat %v", f)
	}
	if f := h.DiskFstype(); f == nil || *f != "ext4" {
		t.Errorf("DiskFstype %v", f)
	}
	if len(h.Labels()) != 0 || h.CreatedAt().IsZero() {
		t.Errorf("labels %v created %v", h.Labels(), h.CreatedAt())
	}
	if _, err := h.FS().Read("x"); err == nil {
		t.Error("host-side file access to a disk volume")
	}
}

func TestVolumeErrors(t *testing.T) {
	ctx := ctxFor(t)
	name := uniqueName("taken")
	if _, err := CreateVolume(ctx, name); err != nil {
		t.Fatal(err)
	}
	defer RemoveVolume(ctx, name)
	_, err := CreateVolume(ctx, name)
	mustKind(t, "CreateVolume twice", err, ErrVolumeAlreadyExists)
	ghost := uniqueName("ghost")
	_, err = GetVolume(ctx, ghost)
	mustKind(t, "GetVolume", err, ErrVolumeNotFound)
	mustKind(t, "RemoveVolume", RemoveVolume(ctx, ghost), ErrVolumeNotFound)
	vfs := (&Volume{c: defaultClient(), name: ghost}).FS()
	mustKind(t, "FS of a missing volume", vfs.WriteString("a", "b"), ErrVolumeNotFound)
	_, err = CreateVolume(ctx, "../escape")
	mustKind(t, "bad name", err, ErrInvalidArgument)
	_, err = CreateVolume(ctx, uniqueName("d"), WithVolumeKind(VolumeKindDisk))
	mustKind(t, "disk without a size", err, ErrInvalidArgument)
	_, err = CreateVolume(ctx, uniqueName("k"), WithVolumeKind("nfs"))
	mustKind(t, "unknown kind", err, ErrInvalidArgument)
	_, err = CreateVolume(ctx, uniqueName("l"), WithVolumeLabels(map[string]string{"bad key": "v"}))
	mustKind(t, "bad label", err, ErrInvalidArgument)
	var e *Error
	if !errors.As(err, &e) || e.Code != "invalid" || e.Status != 400 || e.Message == "" {
		t.Errorf("error details: %#v", e)
	}
	_, err = NewClient(WithSocketPath(filepath.Join(t.TempDir(), "none.sock"))).ListVolumes(ctx)
	mustKind(t, "no server", err, ErrServerUnavailable)
}

func TestVolumeFsOperations(t *testing.T) {
	ctx := ctxFor(t)
	vol, err := CreateVolume(ctx, uniqueName("fs"), WithVolumeQuota(1))
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Remove(ctx)
	vfs := vol.FS()
	data := []byte{0, 1, 2, 0xff, '\n'}
	if err := vfs.Write("bin", data); err != nil {
		t.Fatal(err)
	}
	if got, err := vfs.Read("bin"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Read: %v, %v", got, err)
	}
	st, err := os.Stat(filepath.Join(vfs.Root(), "bin"))
	if err != nil || st.Size() != int64(len(data)) {
		t.Fatalf("on the host: %v %v", st, err)
	}
	if err := vfs.Write("empty", nil); err != nil {
		t.Fatal(err)
	}
	if err := vfs.Mkdir("a/b/c"); err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteString("a/b/c/f.txt", "x"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"a/b/c": true, "a/b/c/f.txt": true, "nope": false, ".": true} {
		if got, err := vfs.Exists(path); err != nil || got != want {
			t.Errorf("Exists(%q) = %v, %v", path, got, err)
		}
	}
	mustKind(t, "Remove of a non-empty directory", vfs.Remove("a/b/c"), ErrFilesystem)
	if err := vfs.Remove("a/b/c/f.txt"); err != nil {
		t.Fatal(err)
	}
	if err := vfs.Remove("a/b/c"); err != nil {
		t.Fatal(err)
	}
	if err := vfs.RemoveAll("a"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := vfs.Exists("a"); ok {
		t.Error("RemoveAll left a")
	}
	_, err = vfs.Read("missing.txt")
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrPathNotFound) {
		t.Errorf("Read of a missing file: %v", err)
	}
	mustKind(t, "Remove of a missing file", vfs.Remove("missing.txt"), ErrPathNotFound)
	// The quota (1 MiB) holds for host-side writes.
	mustKind(t, "Write past the quota", vfs.Write("big", make([]byte, 2<<20)), ErrNoSpace)
}

// ErrPathEscape on "..", absolute paths and symlinks leading out, from
// every VolumeFs method.
func TestVolumeFsPathEscape(t *testing.T) {
	ctx := ctxFor(t)
	vol, err := CreateVolume(ctx, uniqueName("escape"))
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Remove(ctx)
	vfs := vol.FS()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(vfs.Root(), "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../..", filepath.Join(vfs.Root(), "up")); err != nil {
		t.Fatal(err)
	}
	escapes := []string{"../etc/passwd", "a/../../x", "/etc/passwd", "/", "link/secret", "link/new", "up/etc/passwd", "up"}
	for _, p := range escapes {
		ops := map[string]error{
			"Read":        func() error { _, err := vfs.Read(p); return err }(),
			"ReadString":  func() error { _, err := vfs.ReadString(p); return err }(),
			"Write":       vfs.Write(p, []byte("x")),
			"WriteString": vfs.WriteString(p, "x"),
			"Mkdir":       vfs.Mkdir(p + "/d"),
			"Remove":      vfs.Remove(p + "/f"),
			"RemoveAll":   vfs.RemoveAll(p + "/f"),
			"Exists":      func() error { _, err := vfs.Exists(p); return err }(),
		}
		for op, err := range ops {
			if !errors.Is(err, ErrPathEscape) {
				t.Errorf("%s(%q): %v, want ErrPathEscape", op, p, err)
			}
		}
	}
	if got, _ := os.ReadFile(filepath.Join(outside, "secret")); string(got) != "s" {
		t.Errorf("the file outside changed: %q", got)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Errorf("files appeared outside: %v", ents)
	}
	// ".." that stays inside is fine.
	if err := vfs.Mkdir("in"); err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteString("in/../ok.txt", "ok"); err != nil {
		t.Errorf("in/../ok.txt: %v", err)
	}
}

// Bad mounts are refused before anything starts: on the client
// (StatVirtualization on tmpfs) and by the server (a missing volume).
func TestCreateSandboxRefusesBadMounts(t *testing.T) {
	ctx := ctxFor(t)
	name := uniqueName("refused")
	_, err := CreateSandbox(ctx, name, WithMounts(map[string]MountConfig{
		"/scratch": {Tmpfs: true, StatVirtualization: StatVirtualizationOff},
	}))
	mustKind(t, "tmpfs with StatVirtualization", err, ErrInvalidConfig)
	_, err = CreateSandbox(ctx, name, WithMounts(map[string]MountConfig{
		"/data": Mount.Named(uniqueName("ghost"), MountOptions{}),
	}))
	mustKind(t, "named mount of a missing volume", err, ErrInvalidConfig)
	_, err = CreateSandbox(ctx, name, WithMounts(map[string]MountConfig{
		"relative": Mount.Tmpfs(TmpfsOptions{}),
	}))
	mustKind(t, "relative guest path", err, ErrInvalidConfig)
	_, err = GetSandbox(ctx, name)
	mustKind(t, "nothing was created", err, ErrSandboxNotFound)
	mustKind(t, "RemoveSandbox", RemoveSandbox(ctx, name), ErrSandboxNotFound)
}
