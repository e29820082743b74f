//! Single-file bind mounts in real VMs (`-v FILE:GUEST_FILE[:ro]`,
//! `--mount type=bind,src=FILE,…`): the guest sees exactly that file at
//! that path, reads, writes, truncates, fsyncs and maps it; renaming over
//! it or unlinking it fails with EBUSY as on any bind-mounted file; `ro`
//! holds; several files of one directory mount side by side; nothing else
//! of the directory shows or changes. Needs what `run_basic.rs` needs, and
//! rustc for the static mmap helper (tests/guest/msb-mmap.rs).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use msb_tests::guest_helper::build_static_helper;
use msb_tests::msb_proc::EXIT_USAGE;
use msb_tests::sandbox_env::SandboxEnv;

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The value of `key=` on a line of `out`.
fn value(out: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
}

const SCRIPT: &str = r#"
    echo "read=$(cat /etc/app/app.conf | tr '\n' '|')"
    echo "listing=$(ls -a /etc/app | tr '\n' ,)"
    printf 'key = 2\nappended\n' > /etc/app/app.conf && echo "overwrite=ok"
    truncate -s 7 /etc/app/app.conf && echo "truncate=ok"
    sync /etc/app/app.conf && echo "fsync=ok"
    echo "size=$(stat -c %s /etc/app/app.conf)"
    echo new > /etc/app/new
    echo "rename=$(mv /etc/app/new /etc/app/app.conf 2>&1)"
    echo "unlink=$(rm /etc/app/app.conf 2>&1)"
    echo "ro_write=$( (echo x > /etc/app/other.conf) 2>&1)"
    echo "ro_read=$(cat /etc/app/other.conf)"
    chown 1234:5678 /etc/app/app.conf && chmod 640 /etc/app/app.conf
    echo "owner=$(stat -c '%u:%g:%a' /etc/app/app.conf)"
    msb-mmap /data.bin 100 MAPPED
    echo "hidden_mounts=$(grep -c msb-file-shares /proc/mounts)"
    echo "file_mounts=$(grep -cE ' (/etc/app/(app|other).conf|/data.bin|/usr/local/bin/msb-mmap) virtiofs ' /proc/mounts)"
    true
"#;

/// One VM with four single-file binds, two of them from the same host
/// directory and one of them read-only, plus the mmap helper itself
/// bound as a file (and run: the kernel maps it to execute it).
#[test]
fn single_files_are_served_alone() {
    let env = SandboxEnv::new("filebind");
    let conf = env.mkdir("conf");
    fs::write(conf.join("app.conf"), "key = 1\n").unwrap();
    fs::write(conf.join("other.conf"), "other\n").unwrap();
    fs::write(conf.join("secret"), "sibling secret\n").unwrap();
    fs::write(conf.join("data.bin"), vec![b'a'; 4096]).unwrap();
    let tools = env.mkdir("tools");
    let helper = build_static_helper("msb-mmap", &tools).unwrap_or_else(|e| panic!("{e}"));
    let secret_before = fs::metadata(conf.join("secret")).unwrap();
    let host_owner = fs::metadata(conf.join("app.conf")).unwrap().uid();
    let helper_bind = format!("{}:/usr/local/bin/msb-mmap:ro", helper.display());
    let r = env
        .msb(&[
            "run",
            "-v",
            "./conf/app.conf:/etc/app/app.conf",
            "-v",
            "./conf/other.conf:/etc/app/other.conf:ro",
            "--mount",
            "type=bind,src=./conf/data.bin,dst=/data.bin",
            "-v",
            &helper_bind,
            "--",
            "sh",
            "-c",
            SCRIPT,
        ])
        .expect(0);
    let out = &r.stdout;
    let want = |key: &str, v: &str| {
        assert_eq!(
            value(out, key).as_deref(),
            Some(v),
            "{key}\n{}",
            r.describe()
        );
    };
    want("read", "key = 1|");
    want("listing", ".,..,app.conf,other.conf,");
    want("overwrite", "ok");
    want("truncate", "ok");
    want("fsync", "ok");
    want("size", "7");
    want("ro_read", "other");
    want("owner", "1234:5678:640");
    want("mmap", "ok");
    want("hidden_mounts", "0");
    want("file_mounts", "4");
    for key in ["rename", "unlink"] {
        let v = value(out, key).unwrap_or_default();
        assert!(
            v.contains("busy"),
            "{key}: want EBUSY, got {v:?}\n{}",
            r.describe()
        );
    }
    let ro = value(out, "ro_write").unwrap_or_default();
    assert!(
        ro.contains("Read-only"),
        "ro_write: {ro:?}\n{}",
        r.describe()
    );
    // The host: the writes, the truncation and the mapped bytes arrived;
    // the guest's owner lives in the record, not on the host inode;
    // nothing else in the directory changed or appeared.
    assert_eq!(
        fs::read_to_string(conf.join("app.conf")).unwrap(),
        "key = 2"
    );
    assert_eq!(
        fs::read_to_string(conf.join("other.conf")).unwrap(),
        "other\n"
    );
    let data = fs::read(conf.join("data.bin")).unwrap();
    assert_eq!(&data[100..106], b"MAPPED");
    assert_eq!(
        fs::metadata(conf.join("app.conf")).unwrap().uid(),
        host_owner
    );
    assert_eq!(
        listing(&conf),
        ["app.conf", "data.bin", "other.conf", "secret"]
    );
    let secret_after = fs::metadata(conf.join("secret")).unwrap();
    assert_eq!(
        (
            secret_after.mtime_nsec(),
            secret_after.atime_nsec(),
            secret_after.len()
        ),
        (
            secret_before.mtime_nsec(),
            secret_before.atime_nsec(),
            secret_before.len()
        ),
        "the sibling was touched"
    );
    env.assert_clean(Duration::from_secs(10));
}

/// A file cannot land on a guest directory, and a host path that is
/// neither a directory nor a file is refused before anything starts.
#[test]
fn file_binds_are_checked() {
    let env = SandboxEnv::new("filebindbad");
    fs::write(env.dir().join("f"), "x").unwrap();
    let r = env.msb(&["run", "-v", "./f:/etc", "--", "true"]);
    assert_ne!(r.code, 0, "{}", r.describe());
    assert!(
        r.stderr
            .contains("/etc is a directory; a file can only be mounted on a file"),
        "{}",
        r.describe()
    );
    let r = env
        .msb(&["run", "-v", "/dev/null:/null", "--", "true"])
        .expect(EXIT_USAGE);
    assert!(
        r.stderr.contains("neither a directory nor a regular file"),
        "{}",
        r.describe()
    );
    env.assert_clean(Duration::from_secs(10));
}
