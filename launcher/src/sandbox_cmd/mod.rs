//! The sandbox commands of the CLI, thin over [`crate::sandbox`]:
//! `msb create`, `exec`, `shell`, `cp`, `ls`, `inspect`, `stop`, `start`,
//! `rm`, and the hidden `sandbox-supervisor`.
//!
//! Exit statuses: 0 done; 2 bad usage, name or spec, not found, or not in a
//! state that allows it; 125 msb or the VM failed; `exec` and `shell` leave
//! with the command's status (see `msb exec --help`).

pub mod args;
mod cp;
pub mod exec;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::sandbox::spec::SandboxSpec;
use crate::sandbox::store::SandboxRecord;
use crate::sandbox::{lifecycle, Error, Result};
use crate::volume::output::table;
use args::{CpArgs, CreateArgs, InspectArgs, LsArgs, RmArgs, StartArgs, StopArgs};

/// Prints `e` and gives its exit status.
pub fn fail(e: &Error) -> i32 {
    eprintln!("msb: {e}");
    e.exit_code()
}

/// The state directory (`MSB_HOME`).
pub fn home() -> Result<PathBuf> {
    Ok(volumes::default_home()?)
}

/// `msb create`.
pub fn create(args: &CreateArgs) -> Result<i32> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let spec = SandboxSpec {
        machine: args.machine.clone(),
        image: args.image.clone(),
        cwd,
    };
    lifecycle::create(&home()?, &args.name, &spec)?;
    println!("{}", args.name);
    Ok(0)
}

/// `msb cp`.
pub fn cp(args: &CpArgs) -> Result<i32> {
    cp::copy(&home()?, &args.src, &args.dst)?;
    Ok(0)
}

/// `msb ls`.
pub fn ls(args: &LsArgs) -> Result<i32> {
    let list = lifecycle::list(&home()?)?;
    if args.json {
        let items: Vec<_> = list.iter().map(record_json).collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.spec.image.clone().unwrap_or_else(|| "(default)".into()),
                r.status().as_str().to_string(),
                volumes::rfc3339(r.created_at),
                mounts_of(r).join(" "),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["NAME", "IMAGE", "STATUS", "CREATED", "MOUNTS"], &rows)
    );
    Ok(0)
}

/// `msb inspect`: every field, as JSON.
pub fn inspect(args: &InspectArgs) -> Result<i32> {
    let rec = lifecycle::inspect(&home()?, &args.name)?;
    let text = serde_json::to_string_pretty(&record_json(&rec))
        .map_err(|e| Error::State(e.to_string()))?;
    println!("{text}");
    Ok(0)
}

/// `msb stop`.
pub fn stop(args: &StopArgs) -> Result<i32> {
    each(&args.names, |home, n| lifecycle::stop(home, n, args.force))
}

/// `msb start`.
pub fn start(args: &StartArgs) -> Result<i32> {
    each(&args.names, lifecycle::start)
}

/// `msb rm`.
pub fn rm(args: &RmArgs) -> Result<i32> {
    each(&args.names, |home, n| {
        lifecycle::remove(home, n, args.force)
    })
}

/// Applies `op` to every name, printing each name done; the first failure
/// is reported after the others were tried.
fn each(names: &[String], op: impl Fn(&Path, &str) -> Result<()>) -> Result<i32> {
    let home = home()?;
    let mut code = 0;
    for n in names {
        match op(&home, n) {
            Ok(()) => println!("{n}"),
            Err(e) => code = code.max(fail(&e)),
        }
    }
    Ok(code)
}

/// A sandbox's mounts as the user wrote them.
fn mounts_of(r: &SandboxRecord) -> Vec<String> {
    let m = &r.spec.machine;
    let mut out: Vec<String> = m.volumes.iter().map(|v| format!("-v {v}")).collect();
    out.extend(m.tmpfs.iter().map(|t| format!("--tmpfs {t}")));
    out.extend(m.disks.iter().map(|d| format!("--disk {d}")));
    out.extend(m.mounts.iter().map(|x| format!("--mount {x}")));
    out
}

/// A sandbox as `msb ls --json`, `msb inspect` and `msb serve` show it.
pub fn record_json(r: &SandboxRecord) -> serde_json::Value {
    json!({
        "name": r.name,
        "image": r.spec.image,
        "status": r.status().as_str(),
        "reason": r.reason(),
        "created_at": volumes::rfc3339(r.created_at),
        "started_at": r.started_at.map(volumes::rfc3339),
        "supervisor_pid": r.supervisor.filter(|p| p.is_alive()).map(|p| p.pid),
        "mounts": mounts_of(r),
        "cpus": r.spec.machine.cpus,
        "memory": r.spec.machine.memory,
        "env": r.spec.machine.env,
        "workdir": r.spec.machine.workdir,
        "cwd": r.spec.cwd,
    })
}
