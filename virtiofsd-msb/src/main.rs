//! `virtiofsd-msb`: parse the flags, run the daemon, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use virtiofsd_msb::cli::Cli;

fn main() -> ExitCode {
    // Malformed or unknown flags: clap prints the error and exits 2;
    // --help and --version exit 0.
    let cli = Cli::parse();
    match virtiofsd_msb::daemon::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtiofsd-msb: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
