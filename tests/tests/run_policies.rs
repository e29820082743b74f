//! Daemon policies seen from a real guest through `msb run`: guest chown,
//! chmod and mknod live in the override record and survive a new VM while
//! the host inode keeps its owner and owner-only mode (`host-perms=private`,
//! the default), and `host-perms=mirror` copies rwx bits but never setuid.
//! See `run_basic.rs` for prerequisites.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use msb_tests::msb_proc::Sandbox;

#[test]
fn guest_owner_mode_and_devices_persist_while_the_host_inode_is_unchanged() {
    let sb = Sandbox::new("statvirt");
    let data = sb.mkdir("data");
    let mount = format!("{}:/d", data.display());
    let first = sb
        .msb()
        .arg("-v")
        .arg(&mount)
        .sh("echo x > /d/f && chown 1234:5678 /d/f && chmod 4750 /d/f && mknod /d/null c 1 3 && echo done=yes")
        .run();
    first.assert_code(0).assert_clean();
    assert_eq!(
        first.value("done").as_deref(),
        Some("yes"),
        "{}",
        first.describe()
    );

    let host = std::fs::metadata(data.join("f")).unwrap();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!(host.uid(), me, "host owner unchanged");
    assert_eq!(
        host.mode() & 0o7777,
        0o600,
        "private: owner-only, no setuid on the host"
    );
    let dev = std::fs::symlink_metadata(data.join("null")).unwrap();
    assert!(
        dev.file_type().is_file() && !dev.file_type().is_char_device(),
        "host holds a regular file"
    );

    let second = sb
        .msb()
        .arg("-v")
        .arg(&mount)
        .sh("echo f=$(stat -c '%u:%g:%a:%F' /d/f); echo null=$(stat -c '%F:%t,%T' /d/null)")
        .run();
    second.assert_code(0).assert_clean();
    assert_eq!(
        second.value("f").as_deref(),
        Some("1234:5678:4750:regular file"),
        "{}",
        second.describe()
    );
    assert_eq!(
        second.value("null").as_deref(),
        Some("character special file:1,3"),
        "{}",
        second.describe()
    );
}

#[test]
fn mirror_copies_rwx_but_never_setuid() {
    let sb = Sandbox::new("mirror");
    let data = sb.mkdir("data");
    let out = sb
        .msb()
        .arg("-v")
        .arg(format!("{}:/d:host-perms=mirror", data.display()))
        .sh("echo x > /d/f && chmod 4755 /d/f && echo mode=$(stat -c %a /d/f)")
        .run();
    out.assert_code(0).assert_clean();
    assert_eq!(
        out.value("mode").as_deref(),
        Some("4755"),
        "{}",
        out.describe()
    );
    let host = std::fs::metadata(data.join("f")).unwrap();
    assert_eq!(host.mode() & 0o7777, 0o755, "rwx mirrored, setuid not");
}
