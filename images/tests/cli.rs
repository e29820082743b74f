//! The `msb pull` / `msb image` / `msb load` command lines against a real
//! registry, run as an unprivileged user (uid 65534 when the tests run as
//! root): the user who pulled owns the files, the guest sees root and
//! setuid. Needs the `msb` binary (`cargo build -p launcher`, which
//! scripts/test.sh does before the tests).

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{msb_binary, oci_layout, record, ImageSpec, LayerTar, Registry};

struct User {
    uid: u32,
    home: PathBuf,
}

impl User {
    fn msb(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(msb_binary());
        cmd.args(args)
            .env("MSB_HOME", self.home.join("msb"))
            .env("HOME", &self.home)
            .env_remove("DOCKER_CONFIG");
        if common::euid() == 0 {
            cmd.uid(self.uid).gid(self.uid);
        }
        cmd.output().expect("run msb")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pull_ls_inspect_rm_as_an_unprivileged_user() {
    let reg = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    let base = LayerTar::new()
        .dir("usr/bin", 0o755, 0, 0)
        .file("usr/bin/su", b"su", 0o4755, 0, 0)
        .finish();
    oci_layout(layout.path(), &[("t", &ImageSpec::new(vec![base]))]);
    reg.push(layout.path(), "t", "cli/su:1", false);
    let reference = reg.reference("cli/su:1");

    let work = tempfile::tempdir().unwrap();
    let uid = if common::euid() == 0 {
        65534
    } else {
        common::euid()
    };
    std::os::unix::fs::chown(work.path(), Some(uid), Some(uid)).unwrap();
    let user = User {
        uid,
        home: work.path().to_path_buf(),
    };

    let out = user.msb(&["pull", &reference]);
    assert!(out.status.success(), "pull: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sha256:"),
        "{}",
        text(&out.stdout)
    );

    let out = user.msb(&["image", "ls", "--json"]);
    assert!(out.status.success(), "ls: {}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["names"][0], reference.as_str());
    let diff_id = list[0]["layers"][0]["diff_id"]
        .as_str()
        .unwrap()
        .to_string();
    let su = work
        .path()
        .join("msb/images/layers/sha256")
        .join(&diff_id[7..])
        .join("tree/usr/bin/su");
    assert_eq!(
        std::fs::metadata(&su).unwrap().uid(),
        uid,
        "the puller owns the file"
    );
    assert_eq!(std::fs::metadata(&su).unwrap().mode() & 0o7000, 0);
    assert_eq!(record(&su), Some((0, 0, libc::S_IFREG | 0o4755, 0)));

    let out = user.msb(&["image", "inspect", &reference]);
    assert!(
        text(&out.stdout).contains("platform: linux/amd64"),
        "{}",
        text(&out.stdout)
    );
    let out = user.msb(&["image", "rm", &reference]);
    assert!(out.status.success(), "rm: {}", text(&out.stderr));
    let out = user.msb(&["image", "inspect", &reference]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = user.msb(&["pull", "Bad/Name"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = user.msb(&["pull", &reg.reference("cli/none:1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}
