//! A small token issuer for the registry's token mode, run by the tests on
//! a loopback port: it answers `GET /token?service=…&scope=…` with a JWT
//! (RS256, signed by `openssl dgst` with a key whose self-signed
//! certificate the registry trusts; the certificate rides in the `x5c`
//! header). Its policy: repositories under `public/` may be pulled by
//! anyone; one user (`user:password`, HTTP basic auth on the token request)
//! may pull and push everything; wrong credentials get 401. Every request
//! is recorded, so a test can show the bearer flow really happened.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;

/// The `service` the registry names in its challenge (the tokens' `aud`).
pub const SERVICE: &str = "msb-test-registry";
/// The tokens' `iss`.
pub const ISSUER: &str = "msb-test-issuer";

/// One token request the issuer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The user who authenticated, if any.
    pub user: Option<String>,
    /// The scopes asked for (`repository:NAME:ACTIONS`).
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// A running issuer; stopped on drop.
pub struct TokenIssuer {
    /// The token URL (the registry's `realm`).
    pub realm: String,
    /// The certificate the registry must trust.
    pub cert: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// What the issuer needs to answer a request.
struct Keys {
    key: PathBuf,
    cert_der_b64: String,
    user: String,
    password: String,
}

impl TokenIssuer {
    /// Makes a key and certificate with `openssl` and starts serving;
    /// `user:password` gets pull and push everywhere.
    pub fn start(user: &str, password: &str) -> TokenIssuer {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={ISSUER}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(der.status.success(), "openssl x509 -outform DER");
        let keys = Arc::new(Keys {
            key,
            cert_der_b64: STANDARD.encode(&der.stdout),
            user: user.into(),
            password: password.into(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (seen, keys) = (seen.clone(), keys.clone());
                            std::thread::spawn(move || serve(s, &keys, &seen));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        TokenIssuer {
            realm,
            cert,
            seen,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `%XX` decoding of a query value.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(c) => out.push(c),
                    Err(_) => out.extend_from_slice(&b[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(stream: TcpStream, keys: &Keys, seen: &Mutex<Vec<Seen>>) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut basic = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                basic = value.trim().strip_prefix("Basic ").map(str::to_string);
            }
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut scopes = Vec::new();
    for kv in query.split('&') {
        if let Some(("scope", v)) = kv.split_once('=') {
            scopes.extend(unescape(v).split(' ').map(str::to_string));
        }
    }
    let user = basic
        .and_then(|b| STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let (status, body) = match &user {
        Some(creds) if creds != &format!("{}:{}", keys.user, keys.password) => (
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}),
        ),
        _ => {
            let token = sign(keys, user.is_some(), &scopes);
            (
                200,
                json!({"token": token, "access_token": token, "expires_in": 300}),
            )
        }
    };
    seen.lock().unwrap().push(Seen {
        user: user
            .as_deref()
            .map(|c| c.split(':').next().unwrap_or("").to_string()),
        scopes,
        status,
    });
    let body = body.to_string();
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let mut s = stream;
    let _ = write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A signed token granting what the policy allows of `scopes`.
fn sign(keys: &Keys, authenticated: bool, scopes: &[String]) -> String {
    let access: Vec<_> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|a| authenticated || (*a == "pull" && name.starts_with("public/")))
                .collect();
            Some(json!({"type": kind, "name": name, "actions": granted}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [keys.cert_der_b64]});
    let claims = json!({"iss": ISSUER, "sub": if authenticated { keys.user.as_str() } else { "" },
        "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = openssl_sign(&keys.key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// RSA-SHA256 signature of `data` with the PEM key at `key`.
fn openssl_sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl dgst");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    out.stdout
}
