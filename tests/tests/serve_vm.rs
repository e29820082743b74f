//! `msb serve` with real VMs (QEMU TCG), driven by `curl --unix-socket`
//! (the API needs no SDK) and by a raw client for the streamed exec: the
//! Go seed's typical flow (a volume with quota and labels, seeded from the
//! host, attached to a sandbox, read inside), the errors only a sandbox can
//! cause, stdin/stdout/stderr/signals over the upgraded connection, clients
//! that disconnect mid-exec (their command is killed, the server keeps
//! serving), a server restart while the sandbox keeps running, stop/start.
//! Two boots in all.

mod serve_util;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use msb_tests::sandbox_env::SandboxEnv;
use serde_json::{json, Value};
use serve_util::{curl, curl_json, read_head, write_request, Server};

const CLEAN_WITHIN: Duration = Duration::from_secs(30);

/// `curl -X POST -d JSON`.
fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    curl_json(s.socket(), &["-X", "POST", "-d", &text], path)
}

/// Runs `sh -c SCRIPT` in `worker` through curl; (exit code, stdout).
fn sh(s: &Server, script: &str) -> (i64, String) {
    let (status, r) = post(
        s,
        "/v1/sandboxes/worker/exec",
        &json!({"command": ["sh", "-c", script]}),
    );
    assert_eq!(status, 200, "{r}");
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until `script` prints `want` in the sandbox.
fn wait_for(s: &Server, script: &str, want: &str, what: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if sh(s, script).1.trim() == want {
            return;
        }
        assert!(Instant::now() < end, "{what}: still not {want:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Frames of the msb-exec protocol.
struct Stream {
    conn: UnixStream,
    pending: Vec<u8>,
}

impl Stream {
    /// Starts `command` on the upgraded connection.
    fn open(s: &Server, command: &[&str]) -> Stream {
        let mut conn = UnixStream::connect(s.socket()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let body = json!({ "command": command }).to_string();
        write_request(
            &mut conn,
            "POST",
            "/v1/sandboxes/worker/exec/stream",
            &[("Connection", "Upgrade"), ("Upgrade", "msb-exec")],
            Some(body.as_bytes()),
        )
        .unwrap();
        let (status, headers, pending) = read_head(&mut conn).unwrap();
        assert_eq!(
            status,
            101,
            "{headers:?} {}",
            String::from_utf8_lossy(&pending)
        );
        assert!(headers.contains(&("upgrade".into(), "msb-exec".into())));
        Stream { conn, pending }
    }

    fn send(&mut self, kind: u8, payload: &[u8]) {
        use std::io::Write;
        let mut f = vec![kind];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        self.conn.write_all(&f).unwrap();
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            let mut buf = [0u8; 4096];
            let got = self.conn.read(&mut buf).unwrap();
            assert!(got > 0, "stream ended early");
            self.pending.extend_from_slice(&buf[..got]);
        }
        self.pending.drain(..n).collect()
    }

    /// The next frame: (kind, payload).
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let head = self.take(5);
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        (head[0], self.take(len))
    }

    /// Reads frames until the exit; returns (stdout, stderr, exit JSON).
    fn finish(&mut self) -> (String, String, Value) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            let (kind, payload) = self.frame();
            match kind {
                1 => out.extend_from_slice(&payload),
                2 => err.extend_from_slice(&payload),
                3 => {
                    let exit = serde_json::from_slice(&payload).unwrap();
                    return (
                        String::from_utf8_lossy(&out).into_owned(),
                        String::from_utf8_lossy(&err).into_owned(),
                        exit,
                    );
                }
                k => panic!("frame {k}: {}", String::from_utf8_lossy(&payload)),
            }
        }
    }
}

#[test]
fn curl_drives_a_sandbox_through_its_life() {
    let env = SandboxEnv::new("serve-vm");
    let mut s = Server::start(&env);
    let sock = s.socket().to_path_buf();
    serve_util::load_busybox(&env, &s, "alpine:latest");

    // The Go seed's typical flow, with curl.
    let (st, v) = post(
        &s,
        "/v1/volumes",
        &json!({"name": "my-data", "quota_mib": 64, "labels": {"env": "prod"}}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, _) = curl(
        &sock,
        &["-X", "PUT", "--data-binary", "hello"],
        "/v1/volumes/my-data/fs/write?path=seed.txt",
    );
    assert_eq!(st, 204);
    let (st, sb) = post(
        &s,
        "/v1/sandboxes",
        &json!({"name": "worker", "image": "alpine",
                "mounts": [{"type": "named", "path": "/data", "name": "my-data"},
                           {"type": "tmpfs", "path": "/scratch", "size_mib": 16}],
                "env": {"GREETING": "hi"}}),
    );
    assert_eq!(st, 201, "{sb}");
    assert_eq!(sb["status"], "running", "{sb}");
    let supervisor = sb["supervisor_pid"].as_u64().expect("a supervisor");
    assert_eq!(sh(&s, "cat /data/seed.txt"), (0, "hello".into()));
    assert_eq!(
        sh(&s, "echo $GREETING; cat /etc/image-name").1,
        "hi\nalpine:latest\n"
    );
    let (st, r) = post(
        &s,
        "/v1/sandboxes/worker/exec",
        &json!({"command": ["sh", "-c", "cat; echo oops >&2; exit 3"], "stdin": "in\n"}),
    );
    assert_eq!((st, r["exit_code"].clone()), (200, json!(3)), "{r}");
    assert_eq!(
        (r["stdout"].as_str(), r["stderr"].as_str()),
        (Some("in\n"), Some("oops\n"))
    );
    let (_, r) = post(
        &s,
        "/v1/sandboxes/worker/exec",
        &json!({"command": ["sleep", "30"], "timeout_secs": 1}),
    );
    assert_eq!(
        (r["exit_code"].clone(), r["timed_out"].clone()),
        (json!(124), json!(true)),
        "{r}"
    );
    let (_, r) = post(
        &s,
        "/v1/sandboxes/worker/exec",
        &json!({"command": ["no-such-cmd"]}),
    );
    assert_eq!(r["exit_code"], 127, "{r}");
    // A guest write reaches the volume on the host.
    assert_eq!(sh(&s, "echo from-guest > /data/back.txt").0, 0);
    let (_, back) = curl(&sock, &[], "/v1/volumes/my-data/fs/read?path=back.txt");
    assert_eq!(back, "from-guest\n");

    // Errors only a sandbox can cause.
    let (st, e) = curl_json(&sock, &["-X", "DELETE"], "/v1/volumes/my-data");
    assert_eq!((st, e["code"].as_str()), (409, Some("in_use")), "{e}");
    let (st, e) = curl_json(&sock, &["-X", "DELETE"], "/v1/images/alpine:latest");
    assert_eq!((st, e["code"].as_str()), (409, Some("in_use")), "{e}");
    let (st, e) = post(&s, "/v1/sandboxes", &json!({"name": "worker"}));
    assert_eq!(
        (st, e["code"].as_str()),
        (409, Some("already_exists")),
        "{e}"
    );
    let (st, e) = curl_json(&sock, &["-X", "DELETE"], "/v1/sandboxes/worker");
    assert_eq!((st, e["code"].as_str()), (409, Some("in_use")), "{e}");
    let (st, e) = post(&s, "/v1/sandboxes/worker/start", &json!({}));
    assert_eq!(
        (st, e["code"].as_str()),
        (409, Some("invalid_state")),
        "{e}"
    );

    // Streamed: stdin in, stdout and stderr out, the exit code; a signal.
    let mut st_ = Stream::open(&s, &["sh", "-c", "cat; echo done >&2; exit 5"]);
    st_.send(16, b"hello stream\n");
    st_.send(16, b"");
    let (out, err, exit) = st_.finish();
    assert_eq!((out.as_str(), err.as_str()), ("hello stream\n", "done\n"));
    assert_eq!(exit["exit_code"], 5, "{exit}");
    let mut st_ = Stream::open(&s, &["sh", "-c", "echo ready; exec sleep 600"]);
    assert_eq!(st_.frame(), (1, b"ready\n".to_vec()));
    st_.send(17, &15u32.to_be_bytes());
    let (_, _, exit) = st_.finish();
    assert_eq!(
        (exit["exit_code"].clone(), exit["signal"].clone()),
        (json!(143), json!(15)),
        "{exit}"
    );

    // Clients that go away mid-exec take their command with them.
    let mut conn = UnixStream::connect(&sock).unwrap();
    let body = json!({"command": ["sh", "-c", "echo $$ > /tmp/pid1; exec sleep 600"]}).to_string();
    write_request(
        &mut conn,
        "POST",
        "/v1/sandboxes/worker/exec",
        &[],
        Some(body.as_bytes()),
    )
    .unwrap();
    wait_for(
        &s,
        "cat /tmp/pid1 2>/dev/null | wc -l",
        "1",
        "the first command started",
    );
    drop(conn);
    wait_for(
        &s,
        "test -d /proc/$(cat /tmp/pid1) && echo alive || echo gone",
        "gone",
        "killed",
    );
    let st_ = Stream::open(&s, &["sh", "-c", "echo $$ > /tmp/pid2; exec sleep 600"]);
    wait_for(
        &s,
        "cat /tmp/pid2 2>/dev/null | wc -l",
        "1",
        "the streamed command started",
    );
    drop(st_);
    wait_for(
        &s,
        "test -d /proc/$(cat /tmp/pid2) && echo alive || echo gone",
        "gone",
        "killed",
    );

    // The server restarts; the sandbox (its supervisor's) keeps running.
    assert_eq!(s.stop(), 0, "{}", s.log_text());
    assert_eq!(env.status("worker"), "running");
    let s = Server::start(&env);
    let (_, v) = curl_json(&sock, &[], "/v1/sandboxes/worker");
    assert_eq!(
        (v["status"].as_str(), v["supervisor_pid"].as_u64()),
        (Some("running"), Some(supervisor)),
        "{v}"
    );
    assert_eq!(sh(&s, "cat /data/seed.txt"), (0, "hello".into()));

    // Stop and start.
    let (st, v) = post(&s, "/v1/sandboxes/worker/stop", &json!({}));
    assert_eq!((st, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (st, e) = post(
        &s,
        "/v1/sandboxes/worker/exec",
        &json!({"command": ["true"]}),
    );
    assert_eq!(
        (st, e["code"].as_str()),
        (409, Some("invalid_state")),
        "{e}"
    );
    let (st, v) = post(&s, "/v1/sandboxes/worker/start", &json!({}));
    assert_eq!((st, v["status"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(sh(&s, "cat /data/back.txt"), (0, "from-guest\n".into()));

    let (st, _) = curl(&sock, &["-X", "DELETE"], "/v1/sandboxes/worker?force=true");
    assert_eq!(st, 204);
    let (st, e) = curl_json(&sock, &[], "/v1/sandboxes/worker");
    assert_eq!((st, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let (st, _) = curl(&sock, &["-X", "DELETE"], "/v1/volumes/my-data");
    assert_eq!(st, 204);
    drop(s);
    env.assert_clean(CLEAN_WITHIN);
}
