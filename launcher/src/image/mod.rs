//! `msb pull`, `msb load`, `msb image …` and `msb registry …`: the CLI of
//! the [`images`] store.
//!
//! Exit statuses: 0 done; 1 refused or failed (not found, in use,
//! registry or digest errors, I/O); 2 bad usage (bad reference, platform,
//! option), as for clap's own errors.

pub mod args;
mod output;
pub(crate) mod progress;

use std::io::BufRead;

use images::{Error, ImageId, LoadOptions, Platform, PullOptions, Store};

use crate::exit;
use args::{ImageArgs, ImageCommand, LoadArgs, PullArgs, RegistryArgs, RegistryCommand};

/// Refused or failed.
pub const FAILED: i32 = 1;

/// An error with the status the command exits with.
struct Failure {
    code: i32,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            code: if e.is_usage() { exit::USAGE } else { FAILED },
            message: e.to_string(),
        }
    }
}

type Outcome = Result<i32, Failure>;

fn finish(r: Outcome) -> i32 {
    match r {
        Ok(code) => code,
        Err(f) => {
            eprintln!("msb: {}", f.message);
            f.code
        }
    }
}

/// Whether a sandbox (running or stopped) was created from the image: such
/// an image is kept until the sandbox is removed.
pub fn in_use(id: &ImageId) -> bool {
    match volumes::default_home() {
        Ok(home) => crate::sandbox::lifecycle::image_in_use(&home, id),
        Err(_) => true,
    }
}

fn platform(text: &Option<String>) -> Result<Option<Platform>, Failure> {
    Ok(text.as_deref().map(Platform::parse).transpose()?)
}

/// Runs `msb pull`; returns the exit status (errors are printed).
pub fn pull(a: &PullArgs) -> i32 {
    finish((|| {
        let opts = PullOptions {
            platform: platform(&a.platform)?,
            insecure: a.insecure,
            progress: if a.quiet {
                images::progress::silent()
            } else {
                progress::for_stderr()
            },
        };
        images::ImageRef::parse(&a.reference)?;
        let img = Store::open_default()?.pull_blocking(&a.reference, &opts)?;
        if a.quiet {
            println!("{}", img.id);
        } else {
            println!(
                "{} {}",
                img.names.first().map(String::as_str).unwrap_or("<none>"),
                img.id
            );
        }
        Ok(0)
    })())
}

/// Runs `msb load`.
pub fn load(a: &LoadArgs) -> i32 {
    finish((|| {
        let opts = LoadOptions {
            name: a.name.clone(),
            platform: platform(&a.platform)?,
        };
        for img in Store::open_default()?.load(&a.path, &opts)? {
            let names = if img.names.is_empty() {
                "<none>".to_string()
            } else {
                img.names.join(", ")
            };
            println!("{names} {}", img.id);
        }
        Ok(0)
    })())
}

/// Runs `msb image …`.
pub fn main(args: &ImageArgs) -> i32 {
    finish((|| {
        let store = Store::open_default()?;
        match &args.command {
            ImageCommand::Ls { json } => {
                let list = store.list()?;
                if *json {
                    print_json(&list)?;
                } else {
                    print!("{}", output::image_table(&list));
                }
            }
            ImageCommand::Inspect { reference, json } => {
                let img = store.inspect(reference)?;
                if *json {
                    print_json(&img)?;
                } else {
                    print!("{}", output::inspect(&img));
                }
            }
            ImageCommand::Rm { references } => {
                let mut code = 0;
                for r in references {
                    match store.remove(r, in_use) {
                        Ok(removed) => {
                            for n in &removed.untagged {
                                println!("untagged: {n}");
                            }
                            if removed.deleted {
                                println!("deleted: {}", removed.image.id);
                            }
                        }
                        Err(e) => {
                            let f = Failure::from(e);
                            eprintln!("msb: {}", f.message);
                            code = code.max(f.code);
                        }
                    }
                }
                return Ok(code);
            }
            ImageCommand::Prune { all } => {
                let r = store.prune(*all, in_use)?;
                for i in &r.images {
                    println!("deleted: {i}");
                }
                println!(
                    "freed {} blobs ({}), {} layers, {} roots, {} leftovers",
                    r.blobs,
                    output_bytes(r.blob_bytes),
                    r.layers,
                    r.roots,
                    r.temporary
                );
            }
        }
        Ok(0)
    })())
}

fn output_bytes(n: u64) -> String {
    crate::volume::output::human_bytes(n)
}

/// Runs `msb registry …`.
pub fn registry(args: &RegistryArgs) -> i32 {
    finish((|| {
        let store = Store::open_default()?;
        match &args.command {
            RegistryCommand::Login {
                registry,
                username,
                password_stdin,
                password,
                insecure,
            } => {
                let password = match (password, password_stdin) {
                    (Some(p), false) => p.clone(),
                    (Some(_), true) => {
                        return Err(Failure {
                            code: exit::USAGE,
                            message: "give --password or --password-stdin, not both".into(),
                        })
                    }
                    (None, _) => {
                        let mut line = String::new();
                        std::io::stdin()
                            .lock()
                            .read_line(&mut line)
                            .map_err(|e| Failure {
                                code: FAILED,
                                message: format!("read the password from stdin: {e}"),
                            })?;
                        line.trim_end_matches(['\n', '\r']).to_string()
                    }
                };
                let outcome = images::registry::login::login_blocking(
                    store.paths(),
                    registry,
                    username,
                    &password,
                    *insecure,
                )?;
                match outcome {
                    images::registry::login::LoginOutcome::Accepted => println!("login succeeded"),
                    images::registry::login::LoginOutcome::NotRequired => {
                        println!("stored (the registry asks for no credentials)")
                    }
                }
            }
            RegistryCommand::Logout { registry } => {
                if images::registry::auth::store(store.paths(), registry, None)? {
                    println!("removed credentials for {registry}");
                } else {
                    println!("no credentials stored for {registry}");
                }
            }
        }
        Ok(0)
    })())
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure {
        code: FAILED,
        message: format!("JSON output: {e}"),
    })?;
    println!("{text}");
    Ok(())
}
