// Command typical-flow runs the Go seed's "Typical flow" against a running
// `msb serve`: create a named volume with a quota and labels, seed it from
// the host, attach it to a sandbox, and read it inside. It removes what it
// made before it exits.
//
//	msb serve &                      # the API on $MSB_HOME/msb.sock
//	go run ./examples/typical-flow   # needs the image "alpine" (msb pull alpine)
package main

import (
	"context"
	"fmt"
	"log"

	m "github.com/superradcompany/microsandbox/sdk/go"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// run is the flow; its deferred removals run on every path.
func run(ctx context.Context) error {
	vol, err := m.CreateVolume(ctx, "my-data", // 1. create a named volume
		m.WithVolumeQuota(64),
		m.WithVolumeLabels(map[string]string{"env": "prod"}),
	)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	defer func() {
		if err := vol.Remove(ctx); err != nil {
			log.Printf("remove volume: %v", err)
		}
	}()

	vfs := vol.FS() // 2. seed it from the host
	if err := vfs.WriteString("seed.txt", "hello"); err != nil {
		return fmt.Errorf("seed: %w", err)
	}

	sb, err := m.CreateSandbox(ctx, "worker", // 3. attach it to a sandbox
		m.WithImage("alpine"),
		m.WithMounts(map[string]m.MountConfig{
			"/data": m.Mount.Named("my-data", m.MountOptions{}),
		}),
	)
	if err != nil {
		return fmt.Errorf("create sandbox: %w", err)
	}
	defer func() {
		if err := sb.Remove(ctx); err != nil {
			log.Printf("remove sandbox: %v", err)
		}
	}()

	out, err := sb.Exec(ctx, "cat", []string{"/data/seed.txt"}) // 4. read it inside
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	fmt.Printf("volume %s at %s; the sandbox read: %s (exit %d)\n",
		vol.Name(), vol.Path(), out.Stdout(), out.ExitCode())
	return nil
}
