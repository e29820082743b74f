//! `msb volume`: manage named volumes (the [`volumes`] store) and, in
//! [`mounts`], resolve the named mounts of `msb run`.
//!
//! Exit statuses: 0 done; 1 refused or failed (not found, exists, in use,
//! I/O; `fs exists` answering false); 2 bad usage (bad name, option, label
//! or path), as for clap's own errors.

pub mod args;
pub mod mounts;
pub(crate) mod output;

use std::io::{Read, Write};

use volumes::{CreateOptions, Error, Store, VolumeKind};

use crate::exit;
use args::{FsArgs, FsOp, KindArg, VolumeArgs, VolumeCommand};

/// Refused or failed.
pub const FAILED: i32 = 1;

/// An error with the status `msb volume` exits with.
struct Failure {
    code: i32,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let usage =
            e.is_usage() || matches!(e, Error::PathEscape { .. } | Error::InvalidPath { .. });
        Failure {
            code: if usage { exit::USAGE } else { FAILED },
            message: e.to_string(),
        }
    }
}

impl Failure {
    fn io(what: &str, e: std::io::Error) -> Failure {
        Failure {
            code: FAILED,
            message: format!("{what}: {e}"),
        }
    }
}

type Outcome = Result<i32, Failure>;

/// Runs `msb volume …`; returns the exit status (errors are printed).
pub fn main(args: &VolumeArgs) -> i32 {
    match dispatch(args) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("msb: {}", f.message);
            f.code
        }
    }
}

fn dispatch(args: &VolumeArgs) -> Outcome {
    match &args.command {
        VolumeCommand::Create(a) => {
            let labels = parse_labels(&a.labels)?;
            let opts = CreateOptions {
                kind: Some(match a.kind {
                    KindArg::Dir => VolumeKind::Dir,
                    KindArg::Disk => VolumeKind::Disk,
                }),
                quota_mib: a.quota,
                size_mib: a.size,
                labels: labels.into_iter().collect(),
            };
            // Check what was typed before touching the state directory.
            volumes::validate_name(&a.name).map_err(|reason| Error::InvalidName {
                name: a.name.clone(),
                reason,
            })?;
            opts.validate()?;
            let h = Store::open_default()?.create(&a.name, &opts)?;
            println!("{}", h.name);
            Ok(0)
        }
        VolumeCommand::Ls(a) => {
            let filter = parse_labels(&a.labels)?;
            let list: Vec<_> = Store::open_default()?
                .list()?
                .into_iter()
                .filter(|h| h.has_labels(&filter))
                .collect();
            if a.json {
                print_json(&list)?;
            } else {
                print!("{}", output::volume_table(&list));
            }
            Ok(0)
        }
        VolumeCommand::Inspect(a) => {
            let h = Store::open_default()?.get(&a.name)?;
            if a.json {
                print_json(&h)?;
            } else {
                print!("{}", output::inspect(&h));
            }
            Ok(0)
        }
        VolumeCommand::Rm(a) => {
            let mut store = Store::open_default()?;
            let mut code = 0;
            for name in &a.names {
                match store.remove(name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        let f = Failure::from(e);
                        eprintln!("msb: {}", f.message);
                        code = code.max(f.code);
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Fs(a) => fs(a),
    }
}

fn parse_labels(texts: &[String]) -> Result<Vec<(String, String)>, Failure> {
    Ok(texts
        .iter()
        .map(|t| volumes::parse_label(t))
        .collect::<Result<_, _>>()?)
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure {
        code: FAILED,
        message: format!("JSON output: {e}"),
    })?;
    println!("{text}");
    Ok(())
}

fn fs(a: &FsArgs) -> Outcome {
    let vfs = Store::open_default()?.fs(&a.name)?;
    match &a.op {
        FsOp::Read { path } => {
            let data = vfs.read(path)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)
                .and_then(|()| out.flush())
                .map_err(|e| Failure::io("stdout", e))?;
        }
        FsOp::Write { path, data } => {
            let bytes = match data {
                Some(d) => d.clone().into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .lock()
                        .read_to_end(&mut buf)
                        .map_err(|e| Failure::io("stdin", e))?;
                    buf
                }
            };
            vfs.write(path, bytes)?;
        }
        FsOp::Mkdir { path } => vfs.mkdir(path)?,
        FsOp::Rm { recursive, path } => {
            if *recursive {
                vfs.remove_all(path)?
            } else {
                vfs.remove(path)?
            }
        }
        FsOp::Exists { path } => {
            let there = vfs.exists(path)?;
            println!("{there}");
            return Ok(if there { 0 } else { FAILED });
        }
        FsOp::Ls { path, json } => {
            let list = vfs.read_dir(path.as_deref().unwrap_or(""))?;
            if *json {
                print_json(&list)?;
            } else {
                print!("{}", output::entries(&list));
            }
        }
    }
    Ok(0)
}
