//! The command lines of `msb pull`, `msb load`, `msb image` and
//! `msb registry`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

const IMAGE_AFTER_HELP: &str = "\
Images live under $MSB_HOME/images (default ~/.microsandbox/images), an OCI
image layout: blobs verified by digest, each layer unpacked once and shared,
and one root per image built from hard links to the layers. A name without a
registry is Docker Hub's: alpine is docker.io/library/alpine:latest.

Examples:
  msb pull 127.0.0.1:5000/team/app:1        # plain HTTP: a loopback registry
  msb load ./app.tar --name team/app        # docker-archive / oci-archive / OCI dir
  msb image ls --json
  msb image inspect team/app:1
  msb image rm team/app:1
  msb image prune --all

Exit status: 0 done; 1 refused or failed (not found, in use, registry,
  digest mismatch, I/O); 2 bad usage (bad reference, platform, option).";

/// Options of `msb pull`.
#[derive(Debug, Args)]
#[command(after_help = IMAGE_AFTER_HELP)]
pub struct PullArgs {
    /// Image reference: `alpine`, `alpine:3.20`, `host:5000/repo:tag`,
    /// `repo@sha256:…`.
    pub reference: String,
    /// Platform to take from a multi-platform image, e.g. `linux/arm64`
    /// [default: linux/amd64].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Allow plain HTTP to this registry even though it is not on this
    /// host (loopback registries get plain HTTP anyway).
    #[arg(long)]
    pub insecure: bool,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options of `msb load`.
#[derive(Debug, Args)]
#[command(after_help = IMAGE_AFTER_HELP)]
pub struct LoadArgs {
    /// A docker-archive (`docker save`), an oci-archive, or an OCI layout
    /// directory; tarballs may be gzip-compressed.
    pub path: PathBuf,
    /// Name the loaded image: `REPO` (with the archive's own tags) or
    /// `REPO:TAG` (an archive of one image).
    #[arg(long, value_name = "REPO[:TAG]")]
    pub name: Option<String>,
    /// Platform to take from a multi-platform layout [default: linux/amd64].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

/// Options of `msb image`.
#[derive(Debug, Args)]
#[command(after_help = IMAGE_AFTER_HELP)]
pub struct ImageArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// `msb image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images: name, ID, platform, layers, size, added.
    #[command(alias = "list")]
    Ls {
        /// JSON output (an array of inspect objects).
        #[arg(long)]
        json: bool,
    },
    /// Show an image: names, digests, layers, config.
    Inspect {
        /// Name, `repo@sha256:…`, or image ID (prefix).
        reference: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove images (a name, or by ID every name); refused while a
    /// sandbox uses one. Data no other image needs is deleted.
    #[command(alias = "remove")]
    Rm {
        /// Names or IDs.
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
    },
    /// Delete what no image needs (interrupted downloads, leftovers);
    /// `--all` also removes every image no sandbox uses.
    Prune {
        /// Remove every unused image too.
        #[arg(long)]
        all: bool,
    },
}

/// Options of `msb registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// `msb registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Check credentials with a registry and keep them (in
    /// $MSB_HOME/registry-auth.json, mode 0600) for pulls. Docker's
    /// ~/.docker/config.json auths are used too, without a login here.
    Login {
        /// Registry `host[:port]`, e.g. `127.0.0.1:5000` or `docker.io`.
        registry: String,
        /// User name.
        #[arg(short, long)]
        username: String,
        /// Read the password from stdin (one line) [the default when
        /// --password is not given].
        #[arg(long)]
        password_stdin: bool,
        /// The password (visible to other users in the process list:
        /// prefer --password-stdin).
        #[arg(short, long)]
        password: Option<String>,
        /// Allow plain HTTP to a registry not on this host.
        #[arg(long)]
        insecure: bool,
    },
    /// Forget the credentials stored for a registry.
    Logout {
        /// Registry `host[:port]`.
        registry: String,
    },
}
