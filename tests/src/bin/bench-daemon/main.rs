//! `bench-daemon`: native syscalls, virtiofsd and virtiofsd-msb serving the
//! same operations side by side, through this crate's vhost-user frontend
//! (no VM), a fresh daemon per figure. See `scripts/bench-daemon`.

mod args;
mod fixture;
mod host_dir;
mod native;
mod op;
mod pipeline;
mod report;
mod runner;
mod workload;

use std::process::ExitCode;

use args::{Args, USAGE};
use runner::{run_plan, Bench};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-daemon: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let Some(args) = Args::parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    let parent = args.dir.clone().unwrap_or_else(host_dir::default_parent);
    let root = tempfile::Builder::new()
        .prefix("msb-bench-daemon-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temporary directory in {}: {e}", parent.display()))?;
    let share = fixture::create(root.path()).map_err(|e| format!("fixture: {e}"))?;
    let where_ = format!(
        "{} ({})",
        parent.display(),
        host_dir::filesystem_name(&share)
    );
    let bench = Bench::new(share, args.daemons.clone(), args.timing, args.frontend);
    let results = run_plan(&bench, &args.plan)?;
    let text = report::render(&results, &args, &where_);
    print!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
