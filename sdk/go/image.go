package microsandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
)

// ImageInfo is an image of msb's store.
type ImageInfo struct {
	// ID is the image ID (its config digest).
	ID string `json:"id"`
	// Names are the references it is known by.
	Names []string `json:"names"`
	// ManifestDigest is the digest of its manifest.
	ManifestDigest string `json:"manifest_digest"`
	// Platform is os/arch[/variant].
	Platform string `json:"platform"`
	// Size is the sum of its layer sizes, in bytes.
	Size uint64 `json:"size"`
	// Created is when it was built (RFC 3339), if its config says.
	Created string `json:"created"`
}

// PullConfig is what the PullOption functions fill in.
type PullConfig struct {
	// Platform is os/arch[/variant] to pick from an index (default
	// linux/amd64).
	Platform string
	// Insecure allows plain HTTP to a registry not on this host.
	Insecure bool
	// Progress, when set, gets every progress event of the pull.
	Progress func(PullProgress)
}

// PullOption is a functional option of PullImage.
type PullOption func(*PullConfig)

// WithPullPlatform picks a platform from a multi-platform image.
func WithPullPlatform(platform string) PullOption {
	return func(c *PullConfig) { c.Platform = platform }
}

// WithPullInsecure allows plain HTTP to a registry not on this host.
func WithPullInsecure() PullOption {
	return func(c *PullConfig) { c.Insecure = true }
}

// WithPullProgress calls fn with every progress event of the pull.
func WithPullProgress(fn func(PullProgress)) PullOption {
	return func(c *PullConfig) { c.Progress = fn }
}

// PullProgress is one step of a pull.
type PullProgress struct {
	// Event is "resolved", "layer_present", "downloading", "unpacking" or
	// "layer_done".
	Event string `json:"event"`
	// Reference is the normalized reference (resolved).
	Reference string `json:"reference"`
	// Layers is the number of layers (resolved).
	Layers int `json:"layers"`
	// Digest is the layer concerned.
	Digest string `json:"digest"`
	// Done is the bytes of the layer stored so far (downloading).
	Done uint64 `json:"done"`
	// Total is the layer's size (downloading).
	Total uint64 `json:"total"`
}

type pullRequest struct {
	Reference string `json:"reference"`
	Platform  string `json:"platform,omitempty"`
	Insecure  bool   `json:"insecure,omitempty"`
	Progress  bool   `json:"progress,omitempty"`
}

type pullLine struct {
	PullProgress
	Image *ImageInfo `json:"image"`
	Error *apiError  `json:"error"`
}

// PullImage pulls an image from its registry into the store.
func PullImage(ctx context.Context, reference string, opts ...PullOption) (*ImageInfo, error) {
	return defaultClient().PullImage(ctx, reference, opts...)
}

// LoadImage loads the images of a docker-archive, oci-archive or OCI
// layout on this host; name ("repo" or "repo:tag") may be empty.
func LoadImage(ctx context.Context, path, name string) ([]*ImageInfo, error) {
	return defaultClient().LoadImage(ctx, path, name)
}

// ListImages returns every image of the store.
func ListImages(ctx context.Context) ([]*ImageInfo, error) {
	return defaultClient().ListImages(ctx)
}

// GetImage returns one image; ErrImageNotFound when it is not in the store.
func GetImage(ctx context.Context, reference string) (*ImageInfo, error) {
	return defaultClient().GetImage(ctx, reference)
}

// RemoveImage removes a name (and the image with its last name);
// ErrImageInUse while a sandbox was created from it.
func RemoveImage(ctx context.Context, reference string) error {
	return defaultClient().RemoveImage(ctx, reference)
}

// PullImage is the package-level PullImage on this client.
func (c *Client) PullImage(ctx context.Context, reference string, opts ...PullOption) (*ImageInfo, error) {
	cfg := PullConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	req := pullRequest{Reference: reference, Platform: cfg.Platform, Insecure: cfg.Insecure, Progress: cfg.Progress != nil}
	if cfg.Progress == nil {
		var img ImageInfo
		if err := c.call(ctx, "POST", "/v1/images/pull", req, &img); err != nil {
			return nil, err
		}
		return &img, nil
	}
	hreq, err := c.newRequest(ctx, "POST", "/v1/images/pull", req, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 64*1024), 16<<20)
	for lines.Scan() {
		var l pullLine
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			return nil, &Error{Kind: ErrInternal, Message: "pull: bad progress line: " + err.Error(), Cause: err}
		}
		switch l.Event {
		case "done":
			if l.Image == nil {
				return nil, &Error{Kind: ErrInternal, Message: "pull: done without the image"}
			}
			return l.Image, nil
		case "error":
			if l.Error == nil {
				return nil, &Error{Kind: ErrImagePullFailed, Message: "pull failed"}
			}
			return nil, fromAPI(*l.Error, 0)
		default:
			cfg.Progress(l.PullProgress)
		}
	}
	if err := lines.Err(); err != nil {
		return nil, c.transportError(ctx, err)
	}
	return nil, &Error{Kind: ErrImagePullFailed, Message: "pull: the server ended the progress without a result"}
}

// LoadImage is the package-level LoadImage on this client.
func (c *Client) LoadImage(ctx context.Context, path, name string) ([]*ImageInfo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, invalid("load %q: %v", path, err)
	}
	req := struct {
		Path string `json:"path"`
		Name string `json:"name,omitempty"`
	}{abs, name}
	var imgs []*ImageInfo
	if err := c.call(ctx, "POST", "/v1/images/load", req, &imgs); err != nil {
		return nil, err
	}
	return imgs, nil
}

// ListImages is the package-level ListImages on this client.
func (c *Client) ListImages(ctx context.Context) ([]*ImageInfo, error) {
	var imgs []*ImageInfo
	if err := c.call(ctx, "GET", "/v1/images", nil, &imgs); err != nil {
		return nil, err
	}
	return imgs, nil
}

// imagePath is the API path of a reference ('/' and ':' stay as they are).
func imagePath(reference string) string {
	parts := strings.Split(reference, "/")
	for i, p := range parts {
		parts[i] = pathName(p)
	}
	return "/v1/images/" + strings.Join(parts, "/")
}

// GetImage is the package-level GetImage on this client.
func (c *Client) GetImage(ctx context.Context, reference string) (*ImageInfo, error) {
	if reference == "" {
		return nil, invalid("image reference is empty")
	}
	var img ImageInfo
	if err := c.call(ctx, "GET", imagePath(reference), nil, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// RemoveImage is the package-level RemoveImage on this client.
func (c *Client) RemoveImage(ctx context.Context, reference string) error {
	if reference == "" {
		return invalid("image reference is empty")
	}
	return c.call(ctx, "DELETE", imagePath(reference), nil, nil)
}
