//! The seeds' Rust examples (`launcher/examples/`), run as built binaries
//! against the `msb` library in real VMs, and image roots: every sandbox
//! gets the image read-only plus a writable layer of its own.
//!
//! The public registries are not reachable here, so each test loads small
//! busybox images (`msb_tests::oci_image`) as `alpine:latest` and
//! `python:3.12` into its private `MSB_HOME` first; the examples then find
//! them in the store exactly as they would after a pull.

use std::path::PathBuf;
use std::time::Duration;

use msb_tests::oci_image::busybox_layout;
use msb_tests::sandbox_env::{Ran, SandboxEnv};

const CLEAN_WITHIN: Duration = Duration::from_secs(20);

fn load_images(env: &SandboxEnv) {
    for (name, marker) in [("alpine:latest", "alpine"), ("python:3.12", "python")] {
        let dir = env.dir().join(format!("layout-{marker}"));
        busybox_layout(&dir, marker);
        env.msb(&["load", &dir.to_string_lossy(), "--name", name])
            .expect(0);
    }
}

/// `target/release/examples/NAME` (built by `cargo build --release --examples`,
/// as scripts/test.sh does).
fn example(name: &str) -> PathBuf {
    let bin = msb_tests::msb_proc::msb_binary().unwrap_or_else(|e| panic!("{e}"));
    let dir = bin.parent().expect("msb's directory");
    let p = ["examples", "../examples"]
        .iter()
        .map(|d| dir.join(d).join(name))
        .find(|p| p.is_file());
    p.unwrap_or_else(|| {
        panic!(
            "example {name} not built next to {}: run `cargo build --release --examples`",
            bin.display()
        )
    })
}

fn run_example(env: &SandboxEnv, name: &str) -> Ran {
    let bin = msb_tests::msb_proc::msb_binary().unwrap_or_else(|e| panic!("{e}"));
    let out = env
        .command_for(&example(name))
        .env("MSB_BIN", &bin)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        described: format!("example {name}"),
    };
    ran.expect(0)
}

#[test]
fn seed_examples_run_against_the_library() {
    let env = SandboxEnv::new("sdk-seeds");
    load_images(&env);
    std::fs::create_dir_all(env.dir().join("src")).unwrap();
    std::fs::write(env.dir().join("src/main.py"), "print('hi')\n").unwrap();
    std::fs::create_dir_all(env.dir().join("data")).unwrap();

    let share = run_example(&env, "share_between_sandboxes");
    assert!(
        share.stdout.contains("reader read: hello\n"),
        "{}",
        share.describe()
    );
    assert!(
        !share.stdout.contains("reader write exit 0"),
        "{}",
        share.describe()
    );

    let bind = run_example(&env, "bind_mounts");
    assert!(bind.stdout.contains("main.py"), "{}", bind.describe());
    assert!(
        !bind.stdout.contains("write to /app/src exit 0"),
        "{}",
        bind.describe()
    );
    let out = std::fs::read_to_string(env.dir().join("data/out.txt")).unwrap();
    assert_eq!(out, "from-guest\n");
    assert!(!env.dir().join("src/new.txt").exists());

    let named = run_example(&env, "named_volumes");
    assert!(
        named.stdout.contains("marker on the host: cached"),
        "{}",
        named.describe()
    );

    let host = run_example(&env, "host_side_access");
    assert!(
        host.stdout.contains("requirements: requests==2.28.0"),
        "{}",
        host.describe()
    );
    assert!(
        host.stdout.contains("escape refused"),
        "{}",
        host.describe()
    );
    assert!(host.stdout.contains("old-cache"), "{}", host.describe());
    let vols = env.msb(&["volume", "ls", "--json"]).expect(0);
    assert!(!vols.stdout.contains("old-cache"), "{}", vols.describe());

    let tmpfs = run_example(&env, "tmpfs_scratch");
    assert!(tmpfs.stdout.contains(" 100 "), "{}", tmpfs.describe());
    assert!(
        !tmpfs.stdout.contains("dd past the limit: 0"),
        "{}",
        tmpfs.describe()
    );

    // Every example removed its sandboxes.
    assert!(env.list().is_empty(), "{:?}", env.list());
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn image_roots_are_shared_read_only_with_a_writable_layer_each() {
    let env = SandboxEnv::new("sdk-image");
    load_images(&env);
    env.msb(&["create", "a", "--image", "alpine:latest"])
        .expect(0);
    env.msb(&["create", "b", "--image", "alpine:latest"])
        .expect(0);
    let sh = |name: &str, script: &str| env.msb(&["exec", name, "--", "sh", "-c", script]);
    let who = sh(
        "a",
        "cat /etc/image-name; echo $IMAGE_MARKER; stat -c '%u %g %a' /tmp /bin/busybox",
    )
    .expect(0);
    assert_eq!(
        who.stdout,
        "alpine\nalpine\n0 0 1777\n0 0 755\n",
        "{}",
        who.describe()
    );
    sh("a", "echo mine > /etc/image-name && echo new > /root/new").expect(0);
    assert_eq!(
        sh("a", "cat /etc/image-name /root/new").expect(0).stdout,
        "mine\nnew\n"
    );
    // b sees the image as it is.
    let b = sh("b", "cat /etc/image-name; ls /root").expect(0);
    assert_eq!(b.stdout, "alpine\n", "{}", b.describe());
    // The layer survives stop/start.
    env.msb(&["stop", "a"]).expect(0);
    env.msb(&["start", "a"]).expect(0);
    assert_eq!(sh("a", "cat /root/new").expect(0).stdout, "new\n");
    // An image in use is kept.
    let rm = env.msb(&["image", "rm", "alpine:latest"]);
    assert_ne!(rm.code, 0, "{}", rm.describe());
    // msb run from an image: writes are gone with the VM.
    let run = env
        .msb(&[
            "run",
            "--image",
            "python:3.12",
            "--",
            "sh",
            "-c",
            "cat /etc/image-name; touch /x",
        ])
        .expect(0);
    assert_eq!(run.stdout, "python\n", "{}", run.describe());
    env.msb(&["rm", "-f", "a", "b"]).expect(0);
    env.msb(&["image", "rm", "alpine:latest"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn sdk_errors_exec_options_streaming_and_guest_files() {
    let env = SandboxEnv::new("sdk-tour");
    let tour = run_example(&env, "sdk_tour");
    for line in [
        "get missing: not found",
        "missing volume: invalid mount",
        "volume escape: path escape",
        "second create: already exists",
        "listed: tour",
        "env: hi from /tmp",
        "stdin bytes: 100000",
        "tty size: 30 100",
        "timeout exit: 124",
        "missing command exit: 127",
        "stream: out \"got streamed\\n\" err \"err\\n\" code Some(7)",
        "fs read: alpha",
        "fs list: a.txt",
        "fs stat size: 5",
        "fs exists after remove: false",
        "fs missing: not found",
        "volume note: from-guest",
        "status after stop: Stopped",
        "exec when stopped: invalid state",
        "after start: from-guest",
        "done",
    ] {
        assert!(
            tour.stdout.lines().any(|l| l == line),
            "missing {line:?}\n{}",
            tour.describe()
        );
    }
    assert!(!tour.stdout.contains("UNEXPECTED"), "{}", tour.describe());
    assert!(env.list().is_empty());
    env.assert_clean(CLEAN_WITHIN);
}
