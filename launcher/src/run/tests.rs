use clap::Parser;

use super::*;
use crate::cli::{Cli, Command as Sub};
use crate::machine::{memory_mib, resolve_env};

fn run_args(argv: &[&str]) -> RunArgs {
    let mut full = vec!["msb", "run"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full).unwrap().command {
        Sub::Run(a) => *a,
        other => panic!("not a run: {other:?}"),
    }
}

#[test]
fn mounts_are_ordered_parents_first_whatever_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let a = run_args(&[
        "-v",
        &format!("{dir}:/a/b/c"),
        "--tmpfs",
        "/a/b",
        "--mount",
        "type=tmpfs,dst=/a",
        "--",
        "true",
    ]);
    let order: Vec<String> = parse_mounts(&a.machine)
        .unwrap()
        .iter()
        .map(|m| m.guest().to_string())
        .collect();
    assert_eq!(order, ["/a", "/a/b", "/a/b/c"]);
}

#[test]
fn bad_specs_are_usage_errors_naming_the_mount() {
    let a = run_args(&["--tmpfs", "/t:size=1M", "--tmpfs", "/t", "--", "true"]);
    let e = parse_mounts(&a.machine).unwrap_err();
    assert_eq!(e.code, exit::USAGE);
    assert!(e.message.contains("\"/t\""), "{}", e.message);
    let a = run_args(&["--tmpfs", "/t:stat-virt=strict", "--", "true"]);
    assert_eq!(parse_mounts(&a.machine).unwrap_err().code, exit::USAGE);
}

#[test]
fn env_and_memory_parse() {
    std::env::set_var("MSB_TEST_ENV_PASS", "from-host");
    let env = resolve_env(&[
        "A=1".into(),
        "MSB_TEST_ENV_PASS".into(),
        "MSB_TEST_ENV_UNSET_X".into(),
    ])
    .unwrap();
    assert_eq!(env, ["A=1", "MSB_TEST_ENV_PASS=from-host"]);
    assert_eq!(resolve_env(&["=x".into()]).unwrap_err().code, exit::USAGE);
    assert_eq!(memory_mib("512").unwrap(), 512);
    assert_eq!(memory_mib("2G").unwrap(), 2048);
    assert_eq!(memory_mib("512M").unwrap(), 512);
    assert!(memory_mib("1M").unwrap_err().message.contains("--memory"));
    assert!(memory_mib("lots").is_err());
}

#[test]
fn the_command_is_required_after_the_separator() {
    assert!(Cli::try_parse_from(["msb", "run"]).is_err());
    assert!(Cli::try_parse_from(["msb", "run", "--bogus", "--", "x"]).is_err());
    let a = run_args(&["--", "sh", "-c", "echo --not-an-option"]);
    assert_eq!(a.command, ["sh", "-c", "echo --not-an-option"]);
}
