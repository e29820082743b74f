//! A real registry (Debian's `docker-registry`, the distribution registry)
//! on a loopback port with storage in a temporary directory; killed and
//! deleted on drop, also when a test fails. Anonymous, or with htpasswd
//! (basic) auth, or in token mode trusting a token issuer's certificate.
//! Plain HTTP: the registry does not insist on TLS for either auth mode.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: tempfile::TempDir,
    /// `user:password` skopeo pushes with (auth modes).
    push_creds: Option<String>,
}

/// How the registry authenticates clients.
pub enum Auth {
    /// Anyone may pull and push.
    Anonymous,
    /// Basic auth against one bcrypt htpasswd entry (made with `htpasswd
    /// -B`, package apache2-utils).
    Htpasswd {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from an issuer: `WWW-Authenticate: Bearer realm=…`.
    Token {
        /// The issuer's token URL.
        realm: String,
        /// `service` (the tokens' audience).
        service: String,
        /// `iss` of the tokens.
        issuer: String,
        /// PEM certificate whose key signs the tokens.
        cert: PathBuf,
        /// `user:password` the issuer grants pushes to.
        push_creds: String,
    },
}

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} not installed: run scripts/setup.sh (Debian package {package})"
    );
}

impl Registry {
    /// Starts an anonymous registry and waits until it answers `/v2/`.
    pub fn start() -> Registry {
        Registry::start_with(Auth::Anonymous)
    }

    /// Starts a registry with `auth` and waits until it answers `/v2/`.
    pub fn start_with(auth: Auth) -> Registry {
        need("docker-registry", "docker-registry");
        need("skopeo", "skopeo");
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let push_creds = match auth {
            Auth::Anonymous => None,
            Auth::Htpasswd { user, password } => {
                need("htpasswd", "apache2-utils");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", &user, &password])
                    .output()
                    .expect("run htpasswd");
                assert!(out.status.success(), "htpasswd -Bbn failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: msb-test\n    path: {}\n",
                    file.display()
                );
                Some(format!("{user}:{password}"))
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
                push_creds,
            } => {
                config += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                    cert.display()
                );
                Some(push_creds)
            }
        };
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            addr,
            dir,
            push_creds,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.write_all(
                    format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes(),
                );
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                if resp.starts_with("HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("registry on {} did not come up:\n{log}", self.addr);
    }

    /// Pushes `oci:LAYOUT:TAG` to `REPO:DEST_TAG` here (`all`: every
    /// platform of an index).
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = &self.push_creds {
            cmd.arg(format!("--dest-creds={c}"));
        }
        if all {
            cmd.arg("--all");
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file in the registry's storage holding blob `hex`.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `127.0.0.1:PORT/REST`.
    pub fn reference(&self, rest: &str) -> String {
        format!("{}/{rest}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
