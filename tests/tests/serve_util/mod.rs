//! A real `msb serve` for the API tests: started on a socket in a test's
//! private `MSB_HOME` ([`SandboxEnv`]), stopped (SIGTERM, then SIGKILL) on
//! drop; and a small HTTP/1.1 client over the unix socket (requests with
//! `Connection: close`, answers read to the end, chunked bodies decoded),
//! plus `curl --unix-socket` for the tests that show the API without an
//! SDK.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use msb_tests::sandbox_env::SandboxEnv;
use serde_json::Value;

/// How long a server may take to listen.
const START_WITHIN: Duration = Duration::from_secs(30);

/// A running `msb serve`.
pub struct Server {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines (`name: value`, names lower-cased).
    pub headers: Headers,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }

    /// Panics unless the status is `status`.
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status, status, "answer: {}", self.text());
        self
    }

    /// Panics unless this is an error with `status` and `code`.
    pub fn expect_error(self, status: u16, code: &str) -> Reply {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "answer: {}",
            self.text()
        );
        assert!(
            !self.json()["message"].as_str().unwrap_or("").is_empty(),
            "an error names what was wrong: {}",
            self.text()
        );
        self
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    /// Starts `msb serve --socket <dir>/api.sock` in `env`.
    pub fn start(env: &SandboxEnv) -> Server {
        Server::start_at(env, &env.dir().join("api.sock"))
    }

    /// Starts `msb serve --socket SOCKET` in `env` and waits until it
    /// answers.
    pub fn start_at(env: &SandboxEnv, socket: &Path) -> Server {
        let log = env.dir().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let child = env
            .command()
            .args(["serve", "--socket"])
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("start msb serve");
        let server = Server {
            child: Some(child),
            socket: socket.to_path_buf(),
            log,
        };
        server.wait_ready();
        server
    }

    /// Waits until the socket answers `/v1/version`.
    pub fn wait_ready(&self) {
        let end = Instant::now() + START_WITHIN;
        loop {
            if let Ok(r) = try_request(&self.socket, "GET", "/v1/version", &[], None) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "msb serve did not answer on {} within {START_WITHIN:?}; log:\n{}",
                self.socket.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return 0;
        };
        // SAFETY: kill(2) with plain integers on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "msb serve ignored SIGTERM for 30 s; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL (no cleanup on its side).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a request; `body` with its content type.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        try_request(&self.socket, method, path, &[], body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; server log:\n{}", self.log_text()))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    /// `method path` with a JSON body.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.request(method, path, Some(body.to_string().as_bytes()))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send_json("POST", path, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: kill(2) with plain integers on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a request with `Connection: close`.
pub fn write_request(
    stream: &mut UnixStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        head.push_str("Connection: close\r\n");
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    Ok(())
}

/// Header lines as (lower-case name, value).
pub type Headers = Vec<(String, String)>;

/// Reads a response head; returns (status, headers, bytes after the head).
pub fn read_head(stream: &mut UnixStream) -> std::io::Result<(u16, Headers, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "connection closed before a full answer head: {:?}",
                String::from_utf8_lossy(&buf)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, rest))
}

/// Decodes a chunked body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..i]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[i + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// One request on a fresh connection, read to the end.
pub fn try_request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Reply> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    match write_request(&mut stream, method, path, headers, body) {
        // The server may answer (413) and close before reading a big body.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    let (status, headers, mut rest) = read_head(&mut stream)?;
    stream.read_to_end(&mut rest)?;
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&rest) } else { rest };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Runs `curl --unix-socket SOCKET ARGS… http://localhost/PATH`; returns
/// (status, body). `args` come before the URL.
pub fn curl(socket: &Path, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .arg("-sS")
        .arg("--unix-socket")
        .arg(socket)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert!(
        out.status.success(),
        "curl {args:?} {path}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `curl` answering JSON.
pub fn curl_json(socket: &Path, args: &[&str], path: &str) -> (u16, Value) {
    let (status, body) = curl(socket, args, path);
    let v = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("curl {path}: not JSON ({e}): {body}"));
    (status, v)
}

/// Writes the busybox OCI layout (see `msb_tests::oci_image`) under the
/// test directory and loads it as `name` through the API.
pub fn load_busybox(env: &SandboxEnv, server: &Server, name: &str) {
    let dir = env
        .dir()
        .join(format!("layout-{}", name.replace([':', '/'], "-")));
    msb_tests::oci_image::busybox_layout(&dir, name);
    let r = server
        .post(
            "/v1/images/load",
            &serde_json::json!({"path": dir.to_string_lossy(), "name": name}),
        )
        .expect(200);
    assert!(
        r.json()[0]["names"]
            .to_string()
            .contains(name.split(':').next().unwrap_or(name)),
        "{}",
        r.text()
    );
}

/// Debian's `docker-registry` on a free loopback port, storage in `dir`;
/// killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Registry {
    /// Starts it and waits until it answers `/v2/`.
    pub fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/setup.sh installs it)");
        let registry = Registry { child, addr };
        let end = Instant::now() + START_WITHIN;
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(Instant::now() < end, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Pushes the OCI layout `layout` as `repo:tag` with skopeo.
    pub fn push(&self, layout: &Path, repo_tag: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .output()
            .expect("skopeo (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
