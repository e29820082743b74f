package microsandbox

import (
	"context"
	"encoding/json"
)

// VolumeFs is host-side file access to a named volume's data directory:
// no sandbox is needed. Every path is relative to the volume root; paths
// that are absolute, climb out with "..", or lead out through a symlink
// fail with an error matching ErrPathEscape (the server resolves them
// beneath the root with openat2, so no race can lead out either). Writes
// count against the volume's quota. Obtain one with Volume.FS or
// VolumeHandle.FS.
type VolumeFs struct {
	c    *Client
	name string
	root string
}

// Root returns the absolute host path of the volume's data directory.
func (fs *VolumeFs) Root() string { return fs.root }

// op runs one file operation of the volume ("read", "write"...).
func (fs *VolumeFs) op(method, op, relPath string, data []byte) ([]byte, error) {
	path := "/v1/volumes/" + pathName(fs.name) + "/fs/" + op + query("path", relPath)
	return fs.c.callRaw(context.Background(), method, path, data)
}

// Read returns the contents of a file.
func (fs *VolumeFs) Read(relPath string) ([]byte, error) {
	return fs.op("GET", "read", relPath, nil)
}

// ReadString returns the contents of a file as a string.
func (fs *VolumeFs) ReadString(relPath string) (string, error) {
	b, err := fs.Read(relPath)
	return string(b), err
}

// Write writes data to a file, creating it (mode 0o644) or truncating it.
func (fs *VolumeFs) Write(relPath string, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	_, err := fs.op("PUT", "write", relPath, data)
	return err
}

// WriteString writes a string to a file (created with mode 0o644).
func (fs *VolumeFs) WriteString(relPath, content string) error {
	return fs.Write(relPath, []byte(content))
}

// Mkdir creates a directory and its missing parents (mode 0o755).
func (fs *VolumeFs) Mkdir(relPath string) error {
	_, err := fs.op("POST", "mkdir", relPath, nil)
	return err
}

// Remove deletes a single file or an empty directory.
func (fs *VolumeFs) Remove(relPath string) error {
	_, err := fs.op("POST", "remove", relPath, nil)
	return err
}

// RemoveAll deletes a path and everything under it.
func (fs *VolumeFs) RemoveAll(relPath string) error {
	_, err := fs.op("POST", "remove-all", relPath, nil)
	return err
}

// Exists reports whether a file or directory exists at the path.
func (fs *VolumeFs) Exists(relPath string) (bool, error) {
	b, err := fs.op("GET", "exists", relPath, nil)
	if err != nil {
		return false, err
	}
	var r struct {
		Exists bool `json:"exists"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return false, &Error{Kind: ErrInternal, Message: "exists: bad answer: " + err.Error(), Cause: err}
	}
	return r.Exists, nil
}
