// Package microsandbox is the Go SDK of msb: named volumes, sandboxes
// (micro-VMs that stay up), commands run in them, and images, over the
// local API that `msb serve` offers on a unix socket (HTTP/1.1 + JSON,
// see docs/openapi.json in the repository).
//
// Typical flow:
//
//	vol, err := m.CreateVolume(ctx, "my-data",
//	    m.WithVolumeQuota(64),
//	    m.WithVolumeLabels(map[string]string{"env": "prod"}),
//	)
//	err = vol.FS().WriteString("seed.txt", "hello")
//	sb, err := m.CreateSandbox(ctx, "worker",
//	    m.WithImage("alpine"),
//	    m.WithMounts(map[string]m.MountConfig{
//	        "/data": m.Mount.Named("my-data", m.MountOptions{}),
//	    }),
//	)
//	out, err := sb.Exec(ctx, "cat", []string{"/data/seed.txt"})
//
// The package-level functions use a client on the socket named by
// $MSB_SOCKET, else $MSB_HOME/msb.sock, else ~/.microsandbox/msb.sock;
// NewClient(WithSocketPath(...)) gives a client on another one. Only the
// standard library is used.
//
// Errors are *Error values carrying the API's machine code; they match
// their ErrorKind with errors.Is (errors.Is(err, ErrVolumeNotFound)), and
// escaping volume paths match ErrPathEscape.
package microsandbox
