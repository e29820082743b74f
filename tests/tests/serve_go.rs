//! The Go SDK (`sdk/go`) against a real `msb serve` with real VMs: `go vet`,
//! `go test ./...` (unit tests, volumes and their files, every error, and
//! two sandboxes sharing a named volume), then the seed's typical flow as
//! the example program `examples/typical-flow`. Needs Debian's golang-go
//! (scripts/setup.sh installs it); Go fetches nothing (GOPROXY=off, the SDK
//! uses the standard library only).

mod serve_util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use msb_tests::sandbox_env::SandboxEnv;
use serve_util::Server;

const CLEAN_WITHIN: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// `go ARGS` in sdk/go for `env`'s server, with caches under target/.
fn go(env: &SandboxEnv, server: &Server, args: &[&str]) -> Output {
    let target = workspace().join("target/go");
    let bin = msb_tests::msb_proc::msb_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new("go");
    cmd.args(args)
        .current_dir(workspace().join("sdk/go"))
        .env("MSB_HOME", env.home())
        .env("MSB_SOCKET", server.socket())
        .env("MSB_BIN", &bin)
        .env("MSB_TEST_IMAGE", "alpine:latest")
        .env("GOCACHE", target.join("cache"))
        .env("GOPATH", target.join("path"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=readonly")
        .env("GOTOOLCHAIN", "local")
        .env("TMPDIR", env.dir());
    cmd.output()
        .unwrap_or_else(|e| panic!("go {args:?}: {e} (install golang-go: scripts/setup.sh)"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn go_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(go_files(&p));
        } else if p.extension().is_some_and(|x| x == "go") {
            out.push(p);
        }
    }
    out
}

#[test]
fn go_sdk_against_a_real_server() {
    let env = SandboxEnv::new("serve-go");
    let server = Server::start(&env);
    serve_util::load_busybox(&env, &server, "alpine:latest");

    let files: Vec<PathBuf> = go_files(&workspace().join("sdk/go"));
    let fmt = Command::new("gofmt")
        .arg("-l")
        .args(&files)
        .output()
        .expect("gofmt (golang-go)");
    assert!(
        fmt.status.success() && fmt.stdout.is_empty(),
        "gofmt -l: files not formatted\n{}",
        text(&fmt)
    );
    let vet = go(&env, &server, &["vet", "./..."]);
    assert!(vet.status.success(), "go vet\n{}", text(&vet));

    let test = go(&env, &server, &["test", "-count=1", "-v", "./..."]);
    let out = text(&test);
    assert!(test.status.success(), "go test\n{out}");
    for name in [
        "TestTypicalFlowOnTheHost",
        "TestVolumeFsPathEscape",
        "TestVolumeErrors",
        "TestSandboxesShareANamedVolume",
    ] {
        assert!(
            out.contains(&format!("--- PASS: {name}")),
            "{name} did not pass\n{out}"
        );
    }
    assert!(
        !out.contains("--- SKIP") && !out.contains("SKIPPED"),
        "nothing may be skipped here\n{out}"
    );

    let example = go(&env, &server, &["run", "./examples/typical-flow"]);
    let out = text(&example);
    assert!(example.status.success(), "typical-flow\n{out}");
    assert!(
        out.contains("volume my-data at ") && out.contains("the sandbox read: hello (exit 0)"),
        "{out}"
    );
    assert_eq!(
        server.get("/v1/sandboxes").expect(200).json(),
        serde_json::json!([])
    );
    assert_eq!(
        server.get("/v1/volumes").expect(200).json(),
        serde_json::json!([])
    );
    drop(server);
    env.assert_clean(CLEAN_WITHIN);
}
