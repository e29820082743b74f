use super::*;
use clap::error::ErrorKind;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("virtiofsd-msb").chain(args.iter().copied()))
}

fn resolve(args: &[&str]) -> Result<Config, UsageError> {
    parse(args).expect("parses").resolve()
}

#[test]
fn socket_path_mode_with_defaults() {
    let c = resolve(&["--socket-path", "/tmp/s.sock", "--shared-dir", "/srv"]).unwrap();
    assert_eq!(c.mode, Mode::SocketPath("/tmp/s.sock".into()));
    assert_eq!(c.shared_dir, PathBuf::from("/srv"));
    assert_eq!(c.cache, CachePolicy::Auto);
    assert_eq!(c.thread_pool_size, 0);
    assert!(!c.readonly && !c.xattr);
    assert_eq!(c.max_inode_fds, None);
    assert_eq!(c.rlimit_nofile, None);
    assert_eq!(c.log_level, None);
    assert_eq!(c.tag, None);
}

#[test]
fn equals_spelling_and_all_flags() {
    let c = resolve(&[
        "--fd=3",
        "--shared-dir=/srv",
        "--tag=myfs",
        "--readonly",
        "--cache=always",
        "--thread-pool-size=4",
        "--sandbox=none",
        "--log-level=debug",
        "--xattr",
        "--rlimit-nofile=4096",
        "--max-inode-fds=100",
    ])
    .unwrap();
    assert_eq!(c.mode, Mode::Fd(3));
    assert_eq!(c.tag.as_deref(), Some("myfs"));
    assert!(c.readonly && c.xattr);
    assert_eq!(c.cache, CachePolicy::Always);
    assert_eq!(c.thread_pool_size, 4);
    assert_eq!(c.log_level, Some(LogLevel::Debug));
    assert_eq!(c.rlimit_nofile, Some(4096));
    assert_eq!(c.max_inode_fds, Some(100));
}

#[test]
fn fuse_mount_mode() {
    let c = resolve(&[
        "--fuse-mount",
        "/mnt/x",
        "--shared-dir",
        "/srv",
        "--cache",
        "never",
    ])
    .unwrap();
    assert_eq!(c.mode, Mode::FuseMount("/mnt/x".into()));
    assert_eq!(c.cache, CachePolicy::Never);
}

#[test]
fn socket_alias() {
    let c = resolve(&["--socket", "/tmp/a", "--shared-dir", "/srv"]).unwrap();
    assert_eq!(c.mode, Mode::SocketPath("/tmp/a".into()));
}

#[test]
fn exactly_one_mode() {
    let e = resolve(&["--shared-dir", "/srv"]).unwrap_err();
    assert!(e.0.contains("--socket-path"), "{e}");
    let e = resolve(&["--socket-path", "/a", "--fd", "3", "--shared-dir", "/srv"]).unwrap_err();
    assert!(e.0.contains("mutually exclusive"), "{e}");
    let e = resolve(&["--fuse-mount", "/m", "--fd", "3", "--shared-dir", "/srv"]).unwrap_err();
    assert!(e.0.contains("mutually exclusive"), "{e}");
}

#[test]
fn shared_file_is_served_from_its_directory() {
    let c = resolve(&["--fd=3", "--shared-file", "/srv/app/config.toml"]).unwrap();
    assert_eq!(c.shared_dir, PathBuf::from("/srv/app"));
    assert_eq!(
        c.shared_file.as_deref(),
        Some(std::ffi::OsStr::new("config.toml"))
    );
    let c = resolve(&["--fd=3", "--shared-file", "notes"]).unwrap();
    assert_eq!(c.shared_dir, PathBuf::from("."));
    for bad in ["/", "/srv/..", "."] {
        let e = resolve(&["--fd=3", "--shared-file", bad]).unwrap_err();
        assert!(e.0.contains("must name a file"), "{bad:?}: {e}");
    }
    let e = resolve(&["--fd=3", "--shared-file", "/a/f", "--quota-mib", "1"]).unwrap_err();
    assert!(e.0.contains("quota"), "{e}");
    assert!(Cli::try_parse_from([
        "virtiofsd-msb",
        "--fd=3",
        "--shared-file=/a/f",
        "--shared-dir=/a"
    ])
    .is_err());
}

#[test]
fn shared_dir_required() {
    let e = resolve(&["--socket-path", "/a"]).unwrap_err();
    assert!(e.0.contains("--shared-dir"), "{e}");
}

#[test]
fn sandbox_defaults_to_namespace() {
    let c = resolve(&["--socket-path", "/a", "--shared-dir", "/s"]).unwrap();
    assert_eq!(c.sandbox, SandboxMode::Namespace);
    assert_eq!(c.seccomp, SeccompMode::Kill);
    for (flag, mode) in [
        ("kill", SeccompMode::Kill),
        ("log", SeccompMode::Log),
        ("trap", SeccompMode::Trap),
        ("none", SeccompMode::None),
    ] {
        let c = resolve(&["--fd=3", "--shared-dir=/s", "--seccomp", flag]).unwrap();
        assert_eq!(c.seccomp, mode);
    }
    for (flag, mode) in [
        ("namespace", SandboxMode::Namespace),
        ("chroot", SandboxMode::Chroot),
        ("none", SandboxMode::None),
    ] {
        let c = resolve(&["--fd=3", "--shared-dir=/s", "--sandbox", flag]).unwrap();
        assert_eq!(c.sandbox, mode);
    }
}

#[test]
fn tag_limits() {
    let long = "x".repeat(37);
    let e = resolve(&["--socket-path", "/a", "--shared-dir", "/s", "--tag", &long]).unwrap_err();
    assert!(e.0.contains("36"), "{e}");
    let ok = "y".repeat(36);
    assert!(resolve(&["--socket-path", "/a", "--shared-dir", "/s", "--tag", &ok]).is_ok());
    assert!(resolve(&["--socket-path", "/a", "--shared-dir", "/s", "--tag", ""]).is_err());
}

#[test]
fn socket_group_needs_socket_path() {
    assert!(resolve(&["--fd", "3", "--shared-dir", "/s", "--socket-group", "kvm"]).is_err());
    let c = resolve(&[
        "--socket-path",
        "/a",
        "--shared-dir",
        "/s",
        "--socket-group",
        "kvm",
    ])
    .unwrap();
    assert_eq!(c.socket_group.as_deref(), Some("kvm"));
}

#[test]
fn malformed_flags_are_clap_errors() {
    assert_eq!(
        parse(&["--no-such-flag"]).unwrap_err().kind(),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        parse(&["--cache", "sometimes"]).unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        parse(&["--thread-pool-size", "-1"]).unwrap_err().kind(),
        ErrorKind::UnknownArgument
    );
    assert_eq!(
        parse(&["--thread-pool-size", "many"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        parse(&["--max-inode-fds", "0"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
    assert_eq!(
        parse(&["--log-level", "loud"]).unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        parse(&["--sandbox", "jail"]).unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        parse(&["--fd"]).unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
}

#[test]
fn help_and_version_are_not_failures() {
    assert_eq!(
        parse(&["--help"]).unwrap_err().kind(),
        ErrorKind::DisplayHelp
    );
    assert_eq!(
        parse(&["--version"]).unwrap_err().kind(),
        ErrorKind::DisplayVersion
    );
}

#[test]
fn print_capabilities_needs_nothing_else() {
    let cli = parse(&["--print-capabilities"]).unwrap();
    assert!(cli.print_capabilities);
    let caps = capabilities_json();
    assert!(caps.contains("\"type\": \"fs\""));
}

#[test]
fn negative_fd_is_refused() {
    let e = resolve(&["--fd=-1", "--shared-dir", "/s"]).unwrap_err();
    assert!(e.0.contains("--fd -1"), "{e}");
}

#[test]
fn policy_defaults_and_flags() {
    let c = resolve(&["--fd", "3", "--shared-dir", "/s"]).unwrap();
    assert_eq!(c.stat_virtualization, StatVirtualization::Strict);
    assert_eq!(c.host_permissions, HostPermissions::Private);
    assert_eq!(c.quota, None);
    let c = resolve(&[
        "--fd=3",
        "--shared-dir=/s",
        "--stat-virtualization=relaxed",
        "--host-permissions=mirror",
        "--quota-mib=64",
        "--quota-file=/var/q",
    ])
    .unwrap();
    assert_eq!(c.stat_virtualization, StatVirtualization::Relaxed);
    assert_eq!(c.host_permissions, HostPermissions::Mirror);
    assert_eq!(
        c.quota,
        Some(QuotaConfig {
            limit_bytes: 64 << 20,
            accounting_file: Some("/var/q".into())
        })
    );
    let c = resolve(&["--fd=3", "--shared-dir=/s", "--stat-virtualization=off"]).unwrap();
    assert_eq!(c.stat_virtualization, StatVirtualization::Off);
    assert_eq!(
        resolve(&["--fd=3", "--shared-dir=/s", "--quota-mib=0"])
            .unwrap()
            .quota,
        None
    );
}

#[test]
fn policy_flag_errors() {
    let e = resolve(&[
        "--fd=3",
        "--shared-dir=/s",
        "--stat-virtualization=off",
        "--host-permissions=mirror",
    ])
    .unwrap_err();
    assert!(e.0.contains("--host-permissions mirror"), "{e}");
    let e = resolve(&["--fd=3", "--shared-dir=/s", "--quota-file=/q"]).unwrap_err();
    assert!(e.0.contains("non-zero --quota-mib"), "{e}");
    let e = resolve(&[
        "--fd=3",
        "--shared-dir=/s",
        "--quota-mib=18446744073709551615",
    ])
    .unwrap_err();
    assert!(e.0.contains("too large"), "{e}");
    assert_eq!(
        parse(&["--stat-virtualization", "loose"])
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        parse(&["--host-permissions", "public"]).unwrap_err().kind(),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        parse(&["--quota-mib", "-1"]).unwrap_err().kind(),
        ErrorKind::UnknownArgument
    );
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn polling_and_copy_threads() {
    let base = ["--socket-path", "/tmp/s.sock", "--shared-dir", "/srv"];
    let c = resolve(&base).unwrap();
    assert_eq!(c.poll_window, std::time::Duration::from_micros(50));
    assert_eq!(c.copy_threads, crate::copy_crew::default_threads());
    let c = resolve(&[&base[..], &["--poll-us", "0", "--copy-threads", "1"]].concat()).unwrap();
    assert!(c.poll_window.is_zero());
    assert_eq!(c.copy_threads, 1);
    for bad in [
        ["--poll-us", "10001"],
        ["--copy-threads", "65"],
        ["--poll-us", "-1"],
    ] {
        assert!(parse(&bad).is_err(), "{bad:?} accepted");
    }
}
