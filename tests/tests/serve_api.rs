//! `msb serve` without VMs: a real server on a temporary socket with its
//! own `MSB_HOME`. Volumes and their host-side files, every error code a
//! client can cause without a sandbox, bad bodies changing nothing,
//! concurrent clients, the socket's rules (mode, stale and live sockets,
//! activation, restart), images loaded and removed, and the OpenAPI
//! document held against the live server.

mod serve_util;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use msb_tests::sandbox_env::SandboxEnv;
use serde_json::{json, Value};
use serve_util::{try_request, Server};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Names of every volume.
fn volume_names(s: &Server) -> Vec<String> {
    let list = s.get("/v1/volumes").expect(200).json();
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn volumes_and_their_files() {
    let env = SandboxEnv::new("serve-volumes");
    let s = Server::start(&env);

    let v = s
        .post(
            "/v1/volumes",
            &json!({"name": "my-data", "quota_mib": 1, "labels": {"env": "prod", "team": "a"}}),
        )
        .expect(201)
        .json();
    assert_eq!(v["name"], "my-data");
    assert_eq!(v["kind"], "dir");
    assert_eq!(v["quota_mib"], 1);
    assert_eq!(v["labels"], json!({"env": "prod", "team": "a"}));
    assert!(v["capacity_bytes"].is_null() && v["disk_format"].is_null());
    let root = PathBuf::from(v["path"].as_str().expect("path"));
    assert_eq!(root, env.home().join("volumes/my-data"));
    assert!(v["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let fs = |op: &str, path: &str| format!("/v1/volumes/my-data/fs/{op}?path={path}");
    s.request("PUT", &fs("write", "seed.txt"), Some(b"hello"))
        .expect(204);
    assert_eq!(std::fs::read(root.join("seed.txt")).unwrap(), b"hello");
    assert_eq!(s.get(&fs("read", "seed.txt")).expect(200).body, b"hello");
    assert_eq!(
        s.get(&fs("exists", "seed.txt")).expect(200).json(),
        json!({"exists": true})
    );
    assert_eq!(
        s.get(&fs("exists", "nope")).expect(200).json(),
        json!({"exists": false})
    );
    s.request("POST", &fs("mkdir", "a/b/c"), None).expect(204);
    assert!(root.join("a/b/c").is_dir());
    s.request("PUT", &fs("write", "a/b/c/f"), Some(b"x"))
        .expect(204);
    s.request("POST", &fs("remove", "a/b/c"), None)
        .expect_error(409, "conflict");
    s.request("POST", &fs("remove", "a/b/c/f"), None)
        .expect(204);
    s.request("POST", &fs("remove-all", "a"), None).expect(204);
    assert!(!root.join("a").exists());
    // `..` that stays inside is fine.
    s.request("PUT", &fs("write", "x/../inside.txt"), Some(b"ok"))
        .expect_error(404, "not_found");
    s.request("POST", &fs("mkdir", "x"), None).expect(204);
    s.request("PUT", &fs("write", "x/../inside.txt"), Some(b"ok"))
        .expect(204);
    assert_eq!(std::fs::read(root.join("inside.txt")).unwrap(), b"ok");

    // Escapes: `..` out, absolute paths, a symlink leading out.
    std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "out/passwd",
        "%2Fetc%2Fpasswd",
    ] {
        let r = s.get(&fs("read", bad)).expect_error(400, "path_escape");
        assert!(r.text().contains("escapes"), "{}", r.text());
        s.request("PUT", &fs("write", bad), Some(b"x"))
            .expect_error(400, "path_escape");
        s.get(&fs("exists", bad)).expect_error(400, "path_escape");
    }
    s.get(&fs("read", "missing.txt"))
        .expect_error(404, "not_found");

    // The quota holds for writes through the API (1 MiB).
    let big = vec![b'z'; 2 << 20];
    s.request("PUT", &fs("write", "big"), Some(&big))
        .expect_error(507, "no_space");
    assert!(
        !root.join("big").exists()
            || std::fs::metadata(root.join("big")).unwrap().len() < (1 << 20)
    );

    let h = s.get("/v1/volumes/my-data").expect(200).json();
    assert!(h["used_bytes"].as_u64().unwrap() >= 7, "{h}");
    assert_eq!(volume_names(&s), ["my-data"]);

    // A disk volume has no host-side file access.
    let d = s
        .post(
            "/v1/volumes",
            &json!({"name": "d", "kind": "disk", "size_mib": 16}),
        )
        .expect(201)
        .json();
    assert_eq!(d["kind"], "disk");
    assert_eq!(d["capacity_bytes"], 16u64 << 20);
    assert_eq!(d["disk_format"], "raw");
    assert_eq!(d["disk_fstype"], "ext4");
    s.get("/v1/volumes/d/fs/read?path=x")
        .expect_error(409, "conflict");

    s.delete("/v1/volumes/d").expect(204);
    s.delete("/v1/volumes/my-data").expect(204);
    s.get("/v1/volumes/my-data").expect_error(404, "not_found");
    assert!(!root.exists());
    assert!(volume_names(&s).is_empty());
}

/// Every error a client can cause without a sandbox: status, code, a
/// message naming the field, and nothing changed.
#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let env = SandboxEnv::new("serve-errors");
    let s = Server::start(&env);
    s.post(
        "/v1/volumes",
        &json!({"name": "keep", "labels": {"a": "1"}}),
    )
    .expect(201);
    let before = s.get("/v1/volumes").expect(200).json();

    let raw = |method: &str, path: &str, body: &[u8]| s.request(method, path, Some(body));
    let cases: Vec<(serve_util::Reply, u16, &str, &str)> = vec![
        (raw("POST", "/v1/volumes", b"{\"name\": "), 400, "invalid", "not valid JSON"),
        (raw("POST", "/v1/volumes", b"[\"a\"]"), 400, "invalid", "JSON object"),
        (raw("POST", "/v1/volumes", b""), 400, "invalid", "JSON body"),
        (raw("POST", "/v1/volumes", br#"{"name": "a"} x"#), 400, "invalid", "trailing"),
        (raw("POST", "/v1/volumes", br#"{"name": 7}"#), 400, "invalid", "\"name\""),
        (raw("POST", "/v1/volumes", br#"{"nam": "a"}"#), 400, "invalid", "`nam`"),
        (raw("POST", "/v1/volumes", br#"{"name": "a", "colour": "red"}"#), 400, "invalid", "`colour`"),
        (raw("POST", "/v1/volumes", br#"{"name": "a", "quota_mib": -1}"#), 400, "invalid", "quota_mib"),
        (raw("POST", "/v1/volumes", br#"{"name": "a", "quota_mib": "big"}"#), 400, "invalid", "quota_mib"),
        (raw("POST", "/v1/volumes", br#"{"name": "a", "kind": "nfs"}"#), 400, "invalid", "nfs"),
        (raw("POST", "/v1/volumes", br#"{"name": "a", "kind": "disk"}"#), 400, "invalid", "size"),
        (raw("POST", "/v1/volumes", br#"{"name": "../x"}"#), 400, "invalid", "volume name"),
        (raw("POST", "/v1/volumes", br#"{"name": "a", "labels": {"bad key": "v"}}"#), 400, "invalid", "label"),
        (raw("POST", "/v1/volumes", br#"{"name": "keep"}"#), 409, "already_exists", "keep"),
        (s.get("/v1/volumes/nope"), 404, "not_found", "nope"),
        (s.delete("/v1/volumes/nope"), 404, "not_found", "nope"),
        (s.get("/v1/volumes/keep/fs/read"), 400, "invalid", "path"),
        (s.get("/v1/volumes/keep/fs/read?path=a&mode=x"), 400, "invalid", "mode"),
        (s.get("/v1/volumes/keep/fs/read?path=../x"), 400, "path_escape", "../x"),
        (s.get("/v1/volumes/keep/fs/read?path=x"), 404, "not_found", "x"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "mounts": [{"type": "nfs", "path": "/x"}]}"#),
            400, "invalid_mount", "mounts[0].type"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "mounts": [{"type": "tmpfs", "path": "/x", "stat_virtualization": "off"}]}"#),
            400, "invalid_mount", "stat_virtualization"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "mounts": [{"type": "bind", "path": "/x", "source": "rel"}]}"#),
            400, "invalid_mount", "absolute"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "mounts": [{"type": "bind", "path": "/x", "source": "/nonexistent-dir"}]}"#),
            400, "invalid_mount", "nonexistent-dir"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "mounts": [{"type": "named", "path": "/d", "name": "keep,ro"}]}"#),
            400, "invalid_mount", "','"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "mounts": [{"type": "named", "path": "/d", "name": "ghost"}]}"#),
            400, "invalid_mount", "volume \"ghost\" not found"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "cpus": 0}"#), 400, "invalid", "cpus"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "env": {"A=B": "c"}}"#), 400, "invalid", "env"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "-w"}"#), 400, "invalid", "sandbox name"),
        (raw("POST", "/v1/sandboxes", br#"{"name": "w", "image": "UPPER/Case"}"#), 400, "invalid", "UPPER"),
        (s.get("/v1/sandboxes/nope"), 404, "not_found", "nope"),
        (raw("POST", "/v1/sandboxes/nope/exec", br#"{"command": ["true"]}"#), 404, "not_found", "nope"),
        (raw("POST", "/v1/sandboxes/nope/exec", br#"{"command": []}"#), 400, "invalid", "command"),
        (raw("POST", "/v1/sandboxes/nope/exec/stream", br#"{"command": ["true"]}"#), 426, "upgrade_required", "Upgrade"),
        (s.post("/v1/sandboxes/nope/stop", &json!({})), 404, "not_found", "nope"),
        (s.delete("/v1/sandboxes/nope?force=maybe"), 400, "invalid", "force"),
        (s.get("/v1/images/docker.io/library/ghost:1"), 404, "not_found", "ghost"),
        (s.delete("/v1/images/ghost"), 404, "not_found", "ghost"),
        (raw("POST", "/v1/images/load", br#"{"path": "relative"}"#), 400, "invalid", "path"),
        (raw("POST", "/v1/images/pull", br#"{"reference": "Bad Ref"}"#), 400, "invalid", "Bad Ref"),
        (raw("POST", "/v1/images/pull", br#"{"reference": "127.0.0.1:9/none:1"}"#), 502, "registry", "127.0.0.1:9"),
        (s.get("/v1/nothing"), 404, "no_route", "/v1/nothing"),
        (s.get("/v2/volumes"), 404, "no_route", "/v2/volumes"),
        (s.request("PATCH", "/v1/volumes", None), 405, "method_not_allowed", "PATCH"),
    ];
    for (reply, status, code, names) in cases {
        let text = reply.text();
        let reply = reply.expect_error(status, code);
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap_or("")
                .contains(names),
            "{status} {code}: the message should name {names:?}: {text}"
        );
    }

    // Bodies over the limits: 413 without reading them.
    let big_json = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    raw("POST", "/v1/volumes", big_json.as_bytes()).expect_error(413, "too_large");
    let huge = try_request(
        s.socket(),
        "PUT",
        "/v1/volumes/keep/fs/write?path=huge",
        &[("Content-Length", "1099511627776")],
        None,
    )
    .expect("answer");
    assert_eq!(huge.status, 413, "{}", String::from_utf8_lossy(&huge.body));

    // Nothing changed: the same volumes, no sandbox, no stray files.
    assert_eq!(s.get("/v1/volumes").expect(200).json(), before);
    assert_eq!(s.get("/v1/sandboxes").expect(200).json(), json!([]));
    assert!(!env.home().join("volumes/keep/huge").exists());
    assert!(!env.home().join("volumes/a").exists());
    assert_eq!(s.get("/v1/version").expect(200).json()["api"], "v1");
}

/// Many clients at once: independent volumes all made, a contested name
/// made once.
#[test]
fn concurrent_clients() {
    let env = SandboxEnv::new("serve-concurrent");
    let s = Server::start(&env);
    let socket = s.socket().to_path_buf();
    let workers: Vec<_> = (0..12)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let req = |m: &str, p: &str, b: Option<&[u8]>| {
                    try_request(&socket, m, p, &[], b).expect("answer")
                };
                let name = format!("v{i}");
                let body = json!({"name": name, "labels": {"i": i.to_string()}}).to_string();
                assert_eq!(
                    req("POST", "/v1/volumes", Some(body.as_bytes())).status,
                    201
                );
                for j in 0..5 {
                    let path = format!("/v1/volumes/{name}/fs/write?path=f{j}");
                    assert_eq!(
                        req("PUT", &path, Some(format!("{i}-{j}").as_bytes())).status,
                        204
                    );
                }
                let r = req("GET", &format!("/v1/volumes/{name}/fs/read?path=f4"), None);
                assert_eq!(r.body, format!("{i}-4").as_bytes());
                let same = json!({"name": "contested"}).to_string();
                req("POST", "/v1/volumes", Some(same.as_bytes())).status
            })
        })
        .collect();
    let statuses: Vec<u16> = workers
        .into_iter()
        .map(|w| w.join().expect("client"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        11,
        "{statuses:?}"
    );
    let mut names = volume_names(&s);
    names.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    want.push("contested".into());
    want.sort();
    assert_eq!(names, want);
}

/// The socket: mode 0600; a second server on a live socket is refused; a
/// stopped server removes its socket and a killed one's is replaced; the
/// state outlives the server.
#[test]
fn socket_rules_and_restarts() {
    let env = SandboxEnv::new("serve-socket");
    let sock = env.dir().join("api.sock");
    let mut s = Server::start_at(&env, &sock);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    s.post("/v1/volumes", &json!({"name": "lasting"}))
        .expect(201);

    let second = env
        .command()
        .args(["serve", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another server is listening"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    s.get("/v1/version").expect(200);

    assert_eq!(s.stop(), 0, "{}", s.log_text());
    assert!(!sock.exists(), "a stopped server removes its socket");

    let mut s = Server::start_at(&env, &sock);
    assert_eq!(volume_names(&s), ["lasting"]);
    s.kill();
    assert!(sock.exists(), "SIGKILL leaves the socket behind");
    let s = Server::start_at(&env, &sock);
    assert_eq!(volume_names(&s), ["lasting"]);

    // The default socket is $MSB_HOME/msb.sock.
    let mut d = env
        .command()
        .arg("serve")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let default = env.home().join("msb.sock");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while try_request(&default, "GET", "/v1/version", &[], None).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "no server on {}",
            default.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    assert_eq!(d.wait().unwrap().code(), Some(0));

    // Not a socket in the way: refused, left alone.
    let file = env.dir().join("plain");
    std::fs::write(&file, "x").unwrap();
    let r = env
        .command()
        .args(["serve", "--socket"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Socket activation: the server takes the listening socket passed as fd 3
/// with LISTEN_PID/LISTEN_FDS, and leaves its path alone when it stops.
#[test]
fn socket_activation() {
    let env = SandboxEnv::new("serve-activation");
    let path = env.dir().join("activated.sock");
    let log = env.dir().join("activated.log");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = listener.as_raw_fd();
    let bin = msb_tests::msb_proc::msb_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = env.command_for(std::path::Path::new("/bin/sh"));
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --socket /nonexistent/x.sock",
    ])
    .arg(&bin)
    .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: the closure runs between fork and exec and only calls dup2
    // and fcntl on plain integers.
    unsafe {
        cmd.pre_exec(move || {
            let failed = if fd == 3 {
                libc::fcntl(fd, libc::F_SETFD, 0) < 0
            } else {
                libc::dup2(fd, 3) < 0
            };
            if failed {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let r = loop {
        match try_request(&path, "GET", "/v1/version", &[], None) {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < end,
                    "activated server: {e}; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(r.status, 200);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        path.exists(),
        "the activation socket belongs to whoever made it"
    );
}

/// Images through the API: load, list, inspect, remove.
#[test]
fn images_load_list_inspect_remove() {
    let env = SandboxEnv::new("serve-images");
    let s = Server::start(&env);
    serve_util::load_busybox(&env, &s, "team/tool:1");
    let list = s.get("/v1/images").expect(200).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let img = s.get("/v1/images/team/tool:1").expect(200).json();
    assert!(img["names"].to_string().contains("team/tool:1"), "{img}");
    let removed = s.delete("/v1/images/team/tool:1").expect(200).json();
    assert_eq!(removed["deleted"], true, "{removed}");
    s.get("/v1/images/team/tool:1")
        .expect_error(404, "not_found");

    // A pull with progress reports its failure as the last NDJSON line.
    let r = s
        .post(
            "/v1/images/pull",
            &json!({"reference": "127.0.0.1:9/none:1", "progress": true}),
        )
        .expect(200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let last: Value = serde_json::from_str(r.text().lines().last().unwrap_or("")).unwrap();
    assert_eq!(last["event"], "error", "{}", r.text());
    assert_eq!(last["error"]["code"], "registry");
}

/// A pull from a real registry, with progress as NDJSON and without.
#[test]
fn pull_from_a_registry_with_progress() {
    let env = SandboxEnv::new("serve-pull");
    let s = Server::start(&env);
    let registry = serve_util::Registry::start(env.dir());
    let layout = env.dir().join("layout");
    msb_tests::oci_image::busybox_layout(&layout, "pulled");
    registry.push(&layout, "team/tool:1");
    let reference = format!("{}/team/tool:1", registry.addr);

    let r = s
        .post(
            "/v1/images/pull",
            &json!({"reference": reference, "progress": true}),
        )
        .expect(200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let events: Vec<Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an NDJSON line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"resolved"), "{kinds:?}");
    assert_eq!(events[0]["layers"], 1);
    for k in ["downloading", "unpacking", "layer_done"] {
        assert!(kinds.contains(&k), "no {k} event: {kinds:?}");
    }
    let last = events.last().unwrap();
    assert_eq!(last["event"], "done", "{last}");
    assert!(
        last["image"]["names"].to_string().contains(&reference),
        "{last}"
    );
    let id = last["image"]["id"].clone();

    // Again without progress: the image alone (already there, same ID).
    let img = s
        .post("/v1/images/pull", &json!({"reference": reference}))
        .expect(200)
        .json();
    assert_eq!(img["id"], id);
    s.get(&format!("/v1/images/{reference}")).expect(200);
    s.post(
        "/v1/images/pull",
        &json!({"reference": format!("{}/team/ghost:1", registry.addr)}),
    )
    .expect_error(404, "not_found");
}

/// Every route of docs/openapi.json exists on the live server (it never
/// answers no_route or method_not_allowed for one).
#[test]
fn openapi_routes_exist_on_the_server() {
    let env = SandboxEnv::new("serve-openapi");
    let s = Server::start(&env);
    let text = std::fs::read_to_string(workspace().join("docs/openapi.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let concrete = path
                .replace("{name}", "ghost")
                .replace("{reference}", "ghost/image:1");
            let body = (method == "post" || method == "put").then_some(&b"{}"[..]);
            let r = s.request(&method.to_uppercase(), &format!("{concrete}?path=x"), body);
            let code = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(String::from))
                .unwrap_or_default();
            assert!(
                code != "no_route" && code != "method_not_allowed",
                "{method} {path} is documented but not served: {}",
                r.text()
            );
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} routes in docs/openapi.json");
}
