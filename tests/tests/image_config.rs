//! The image config is honoured in real VMs: `Env`, `WorkingDir`,
//! `Entrypoint` + `Cmd` (composed as `docker run` does) and `User` (a name
//! resolved from the image's own `/etc/passwd` and `/etc/group` on the
//! host), for `msb run --image` and as the default user of a sandbox's
//! execs. Three boots.

mod image_util;

use image_util::{write_layout, Layer};
use msb_tests::sandbox_env::SandboxEnv;
use serde_json::json;

const CLEAN_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// Prints its arguments and who and where it runs.
const SHOW: &str =
    "echo \"[$*]\" uid=$(id -u) gid=$(id -g) home=$HOME pwd=$(pwd) greeting=$GREETING";

fn load(env: &SandboxEnv, name: &str, config: serde_json::Value) {
    let layer = Layer::busybox()
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        )
        .dir("home", 0o755)
        .dir_owned("home/app", 0o700, 1000, 1001)
        .dir_owned("work", 0o755, 1000, 1001)
        .finish();
    let dir = env
        .dir()
        .join(format!("layout-{}", name.replace([':', '/'], "-")));
    write_layout(&dir, "t", &[layer], config);
    env.msb(&["load", &dir.to_string_lossy(), "--name", name])
        .expect(0);
}

#[test]
fn entrypoint_cmd_user_workdir_env_in_a_vm() {
    let env = SandboxEnv::new("image-config");
    load(
        &env,
        "cfg:1",
        json!({
            "Env": ["PATH=/bin:/usr/bin", "GREETING=hi"],
            "Entrypoint": ["/bin/sh", "-c", SHOW, "entry"],
            "Cmd": ["default", "args"],
            "User": "app:staff",
            "WorkingDir": "/work",
        }),
    );
    load(&env, "bare:1", json!({"Env": ["PATH=/bin"]}));
    load(&env, "ghost:1", json!({"User": "ghost", "Cmd": ["true"]}));

    // Usage errors come before anything boots.
    let none = env.msb(&["run"]);
    assert_eq!(none.code, 2, "{}", none.describe());
    let bare = env.msb(&["run", "--image", "bare:1"]);
    assert_eq!(bare.code, 2, "{}", bare.describe());
    assert!(
        bare.stderr.contains("no Entrypoint or Cmd"),
        "{}",
        bare.describe()
    );
    let ghost = env.msb(&["run", "--image", "ghost:1"]);
    assert_ne!(ghost.code, 0, "{}", ghost.describe());
    assert!(
        ghost
            .stderr
            .contains("no user \"ghost\" in the image's /etc/passwd"),
        "{}",
        ghost.describe()
    );

    // No command: Entrypoint + Cmd, as the image's user, in its workdir.
    let run = env.msb(&["run", "--image", "cfg:1"]).expect(0);
    assert_eq!(
        run.stdout,
        "[default args] uid=1000 gid=50 home=/home/app pwd=/work greeting=hi\n",
        "{}",
        run.describe()
    );
    // A command replaces Cmd and follows the Entrypoint; -e and -w win.
    let run = env
        .msb(&[
            "run",
            "--image",
            "cfg:1",
            "-e",
            "GREETING=yo",
            "-w",
            "/tmp",
            "--",
            "one",
            "two",
        ])
        .expect(0);
    assert_eq!(
        run.stdout,
        "[one two] uid=1000 gid=50 home=/home/app pwd=/tmp greeting=yo\n",
        "{}",
        run.describe()
    );

    // A sandbox: the image's user is the default of every exec; -u wins.
    env.msb(&["create", "s", "--image", "cfg:1"]).expect(0);
    let who = env
        .msb(&["exec", "s", "--", "sh", "-c", SHOW, "exec"])
        .expect(0);
    assert_eq!(
        who.stdout,
        "[] uid=1000 gid=50 home=/home/app pwd=/work greeting=hi\n",
        "{}",
        who.describe()
    );
    let root = env
        .msb(&["exec", "s", "-u", "0", "--", "id", "-u"])
        .expect(0);
    assert_eq!(root.stdout, "0\n", "{}", root.describe());
    // The user's writes land in its own writable layer.
    let mine = env
        .msb(&[
            "exec",
            "s",
            "--",
            "sh",
            "-c",
            "touch /home/app/mine && stat -c '%u %g' /home/app/mine",
        ])
        .expect(0);
    assert_eq!(mine.stdout, "1000 50\n", "{}", mine.describe());
    env.msb(&["rm", "-f", "s"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}
