package microsandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
)

// SocketEnv names the environment variable holding the API socket path.
const SocketEnv = "MSB_SOCKET"

// HomeEnv names the environment variable holding msb's state directory;
// the socket is $MSB_HOME/msb.sock unless SocketEnv says otherwise.
const HomeEnv = "MSB_HOME"

// socketName is the socket's file name under the state directory.
const socketName = "msb.sock"

// baseURL is the URL prefix of every request (the host is not used: the
// connection always goes to the unix socket).
const baseURL = "http://msb"

// Client talks to one `msb serve` socket. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// ClientOption configures NewClient.
type ClientOption func(*Client)

// WithSocketPath sets the unix socket of the API.
func WithSocketPath(path string) ClientOption {
	return func(c *Client) { c.socket = path }
}

// DefaultSocketPath is the socket the package-level functions use:
// $MSB_SOCKET, else $MSB_HOME/msb.sock, else ~/.microsandbox/msb.sock.
func DefaultSocketPath() string {
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	if h := os.Getenv(HomeEnv); h != "" {
		return filepath.Join(h, socketName)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".microsandbox", socketName)
	}
	return filepath.Join(home, ".microsandbox", socketName)
}

// NewClient returns a client on DefaultSocketPath, or on the socket an
// option names.
func NewClient(opts ...ClientOption) *Client {
	c := &Client{socket: DefaultSocketPath()}
	for _, o := range opts {
		o(c)
	}
	socket := c.socket
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 8,
	}
	c.http = &http.Client{Transport: transport}
	return c
}

// SocketPath is the socket this client talks to.
func (c *Client) SocketPath() string { return c.socket }

var (
	clientsMu sync.Mutex
	clients   = map[string]*Client{}
)

// defaultClient is the client of DefaultSocketPath (one per socket path,
// so its idle connections are reused).
func defaultClient() *Client {
	path := DefaultSocketPath()
	clientsMu.Lock()
	defer clientsMu.Unlock()
	c, ok := clients[path]
	if !ok {
		c = NewClient(WithSocketPath(path))
		clients[path] = c
	}
	return c
}

// query builds "?k=v&..." from pairs.
func query(pairs ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		v.Set(pairs[i], pairs[i+1])
	}
	return "?" + v.Encode()
}

// pathName escapes one path segment (a name or reference).
func pathName(s string) string { return url.PathEscape(s) }

// newRequest builds a request; a non-nil body is JSON unless raw.
func (c *Client) newRequest(ctx context.Context, method, path string, body interface{}, raw []byte) (*http.Request, error) {
	var rd io.Reader
	ctype := ""
	switch {
	case raw != nil:
		rd = bytes.NewReader(raw)
		ctype = "application/octet-stream"
	case body != nil:
		b, err := json.Marshal(body)
		if err != nil {
			return nil, &Error{Kind: ErrInvalidArgument, Message: "encode request: " + err.Error(), Cause: err}
		}
		rd = bytes.NewReader(b)
		ctype = "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL+path, rd)
	if err != nil {
		return nil, &Error{Kind: ErrInvalidArgument, Message: err.Error(), Cause: err}
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req, nil
}

// send performs a request and returns the answer when it is 2xx, else
// the API error it carries.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(req.Context(), err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

// transportError types a failure to talk to the server at all.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return &Error{Kind: ErrCancelled, Message: ctx.Err().Error(), Cause: ctx.Err()}
	}
	return &Error{
		Kind:    ErrServerUnavailable,
		Message: fmt.Sprintf("cannot reach msb serve on %s (start it with `msb serve`)", c.socket),
		Cause:   err,
	}
}

// call sends a JSON request (body may be nil) and decodes a JSON answer
// into out (which may be nil).
func (c *Client) call(ctx context.Context, method, path string, body, out interface{}) error {
	req, err := c.newRequest(ctx, method, path, body, nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return &Error{Kind: ErrInternal, Message: fmt.Sprintf("%s %s: bad answer: %v", method, path, err), Cause: err}
	}
	return nil
}

// callRaw sends raw bytes (may be nil) and returns the raw answer.
func (c *Client) callRaw(ctx context.Context, method, path string, raw []byte) ([]byte, error) {
	req, err := c.newRequest(ctx, method, path, nil, raw)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &Error{Kind: ErrIO, Message: fmt.Sprintf("%s %s: reading the answer: %v", method, path, err), Cause: err}
	}
	return b, nil
}
