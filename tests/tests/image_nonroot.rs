//! A non-root host user (uid 65534 when the tests run as root) with its own
//! `MSB_HOME` loads an image holding a setuid-root `/usr/bin/su` and runs
//! it: the store's files belong to that user and carry no setuid bit on
//! the host, while the guest sees root and setuid (stat virtualization);
//! QEMU (TCG), the daemons and a sandbox's supervisor all run as that
//! user; the sandbox's sparse writable layer takes a few MiB. Two boots.
//!
//! Known and left: a symlink of an image shows the puller's uid in the
//! guest (Linux keeps no `user.*` xattr on a symlink, so it has no record).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

mod image_util;

use image_util::{write_layout, Layer};
use msb_tests::sandbox_env::{Ran, SandboxEnv};
use serde_json::json;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The unprivileged user: `nobody` when running as root, else ourselves.
fn unprivileged() -> u32 {
    match euid() {
        0 => 65534,
        uid => uid,
    }
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// `msb ARGS` as the unprivileged user.
fn msb_as(env: &SandboxEnv, uid: u32, args: &[&str]) -> Ran {
    let mut cmd = env.command();
    cmd.args(args).stdin(std::process::Stdio::null());
    if euid() == 0 {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run msb");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        described: format!("(uid {uid}) msb {}", args.join(" ")),
    }
}

#[test]
fn a_non_root_user_runs_an_image_with_a_setuid_root_su() {
    let env = SandboxEnv::new("image-nonroot");
    let uid = unprivileged();
    let layout = env.dir().join("layout");
    let layer = Layer::busybox()
        .file(
            "usr/bin/su",
            0o4755,
            &std::fs::read("/bin/busybox").unwrap(),
        )
        .finish();
    write_layout(
        &layout,
        "t",
        &[layer],
        json!({"Env": ["PATH=/bin:/usr/bin"]}),
    );
    std::fs::create_dir_all(env.dir().join("run")).unwrap();
    for p in [env.home().to_path_buf(), env.dir().join("run"), layout] {
        chown_tree(&p, uid);
    }

    let layout = env.dir().join("layout");
    msb_as(
        &env,
        uid,
        &["load", &layout.to_string_lossy(), "--name", "su:1"],
    )
    .expect(0);
    let script = "ls -ln /usr/bin/su | cut -c1-10; stat -c '%u %g %a' /usr/bin/su; id -u";
    let run = msb_as(
        &env,
        uid,
        &[
            "run",
            "--image",
            "su:1",
            "--timeout",
            "120",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .expect(0);
    assert_eq!(
        run.stdout,
        "-rwsr-xr-x\n0 0 4755\n0\n",
        "{}",
        run.describe()
    );

    // On the host (the root built by the run): the puller's file, no setuid bit.
    let roots = env.home().join("images/roots");
    let root = std::fs::read_dir(&roots)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let su = std::fs::metadata(root.join("usr/bin/su")).unwrap();
    assert_eq!(su.uid(), uid, "the store's file belongs to the puller");
    assert_eq!(su.mode() & 0o7000, 0, "no setuid bit on the host");

    // A sandbox of it, run by the same user (supervisor, QEMU, daemons).
    msb_as(&env, uid, &["create", "s", "--image", "su:1"]).expect(0);
    let exec = msb_as(&env, uid, &["exec", "s", "--", "sh", "-c", script]).expect(0);
    assert_eq!(
        exec.stdout,
        "-rwsr-xr-x\n0 0 4755\n0\n",
        "{}",
        exec.describe()
    );
    let dir = env.home().join("sandboxes/s");
    // The 4 GiB writable layer is sparse: a few MiB once the guest mounted
    // it (mkfs does not write the journal out).
    let upper = std::fs::metadata(dir.join("upper.raw")).unwrap();
    assert_eq!(upper.len(), 4 << 30);
    assert!(
        upper.blocks() * 512 < 8 << 20,
        "writable layer takes {} KiB on the host",
        upper.blocks() / 2
    );
    let owners: Vec<u32> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().uid())
        .collect();
    assert!(
        owners.iter().all(|&o| o == uid),
        "the sandbox's files belong to the user: {owners:?}"
    );
    msb_as(&env, uid, &["rm", "-f", "s"]).expect(0);
    env.assert_clean(std::time::Duration::from_secs(20));
}
