//! Registry authentication through the `msb` command line, against real
//! registries (Debian's `docker-registry`, plain HTTP on loopback):
//!
//! - htpasswd (basic auth, bcrypt): an anonymous pull is refused with a
//!   message saying how to log in, and stores nothing; a wrong password is
//!   refused at `msb registry login`; the right one is kept and used; so
//!   are Docker's `~/.docker/config.json` auths (HOME set by the test).
//! - token mode: the registry trusts the certificate of a token issuer the
//!   test runs ([`common::token`]); the bearer flow really happens (the
//!   issuer records each token request): anonymous tokens for a public
//!   repository, tokens for the logged-in user for a private one, and an
//!   anonymous pull of the private one refused.
//!
//! Needs the `msb` binary (`cargo build --release -p launcher`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use common::registry::{Auth, Registry};
use common::token::{TokenIssuer, ISSUER, SERVICE};
use common::{msb_binary, oci_layout, store_listing, ImageSpec, LayerTar};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `msb ARGS` with `HOME=home` and `MSB_HOME=home/msb` (and no
/// `DOCKER_CONFIG` from the caller), `stdin` written to its stdin.
fn msb(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(msb_binary())
        .args(args)
        .env("HOME", home)
        .env("MSB_HOME", home.join("msb"))
        .env_remove("DOCKER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run msb");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn push_small(reg: &Registry, repo_tag: &str) {
    let layout = tempfile::tempdir().unwrap();
    let layer = LayerTar::new()
        .dir("etc", 0o755, 0, 0)
        .file("etc/hello", repo_tag.as_bytes(), 0o644, 0, 0)
        .finish();
    oci_layout(layout.path(), &[("t", &ImageSpec::new(vec![layer]))]);
    reg.push(layout.path(), "t", repo_tag, false);
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn assert_denied(out: &Output, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.contains("access denied") && err.contains("msb registry login"),
        "{what}: the message says the pull was denied and how to log in: {err}"
    );
}

#[test]
fn htpasswd_refuses_anonymous_and_takes_login_or_docker_config() {
    let reg = Registry::start_with(Auth::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    push_small(&reg, "team/app:1");
    let reference = reg.reference("team/app:1");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    // Anonymous: refused, nothing stored.
    let out = msb(h, &["pull", &reference], None);
    assert_denied(&out, "anonymous pull");
    assert!(
        store_listing(&h.join("msb"))
            .iter()
            .all(|p| !p.starts_with("blobs/sha256") || p == Path::new("blobs/sha256")),
        "nothing stored: {:?}",
        store_listing(&h.join("msb"))
    );

    // A wrong password is refused at login and not kept.
    let out = msb(
        h,
        &[
            "registry",
            "login",
            &reg.addr,
            "-u",
            "alice",
            "--password-stdin",
        ],
        Some("wrong\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !h.join("msb/registry-auth.json").exists() || {
            let f = std::fs::read_to_string(h.join("msb/registry-auth.json")).unwrap();
            !f.contains(&reg.addr)
        }
    );
    // The right one is kept (0600) and used.
    let out = msb(
        h,
        &[
            "registry",
            "login",
            &reg.addr,
            "-u",
            "alice",
            "--password-stdin",
        ],
        Some("s3cret\n"),
    );
    assert_ok(&out, "login");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.join("msb/registry-auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_ok(&msb(h, &["pull", &reference], None), "pull after login");
    assert_ok(&msb(h, &["registry", "logout", &reg.addr], None), "logout");
    assert_ok(&msb(h, &["image", "rm", &reference], None), "image rm");
    assert_denied(&msb(h, &["pull", &reference], None), "pull after logout");

    // Docker's config.json auths.
    let docker = h.join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config = serde_json::json!({"auths": {format!("http://{}", reg.addr): {"auth": auth}}});
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    assert_ok(
        &msb(h, &["pull", &reference], None),
        "pull with ~/.docker/config.json",
    );
}

#[test]
fn token_mode_bearer_flow_with_a_test_issuer() {
    let issuer = TokenIssuer::start("bob", "hunter2");
    let reg = Registry::start_with(Auth::Token {
        realm: issuer.realm.clone(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert: issuer.cert.clone(),
        push_creds: "bob:hunter2".into(),
    });
    push_small(&reg, "public/tool:1");
    push_small(&reg, "private/app:1");
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let before = issuer.seen().len();

    // Anonymous bearer tokens: enough for the public repository.
    assert_ok(
        &msb(h, &["pull", &reg.reference("public/tool:1")], None),
        "anonymous pull of a public repository",
    );
    let seen = issuer.seen()[before..].to_vec();
    assert!(
        seen.iter().any(|s| s.user.is_none()
            && s.status == 200
            && s.scopes
                .iter()
                .any(|sc| sc.starts_with("repository:public/tool:") && sc.contains("pull"))),
        "an anonymous token for public/tool was asked for: {seen:?}"
    );

    // The private one: the token carries no access, the registry refuses.
    assert_denied(
        &msb(h, &["pull", &reg.reference("private/app:1")], None),
        "anonymous pull of a private repository",
    );
    // Wrong credentials: the issuer refuses them at login.
    let out = msb(
        h,
        &[
            "registry",
            "login",
            &reg.addr,
            "-u",
            "bob",
            "--password-stdin",
        ],
        Some("nope\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        issuer
            .seen()
            .iter()
            .any(|s| s.user.as_deref() == Some("bob") && s.status == 401),
        "{:?}",
        issuer.seen()
    );
    let out = msb(
        h,
        &[
            "registry",
            "login",
            &reg.addr,
            "-u",
            "bob",
            "--password-stdin",
        ],
        Some("hunter2\n"),
    );
    assert_ok(&out, "login");
    let before = issuer.seen().len();
    assert_ok(
        &msb(h, &["pull", &reg.reference("private/app:1")], None),
        "pull of the private repository after login",
    );
    let seen = issuer.seen()[before..].to_vec();
    assert!(
        seen.iter().any(|s| s.user.as_deref() == Some("bob")
            && s.status == 200
            && s.scopes
                .iter()
                .any(|sc| sc.starts_with("repository:private/app:"))),
        "bob's token for private/app was asked for: {seen:?}"
    );
}
