//! `msb`: the micro-VM launcher (see the `launcher` library).

use clap::Parser;
use msb::cli::{Cli, Command, LogLevel};
use msb::exit;
use msb::sandbox_cmd;

fn init_logging(level: LogLevel) {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("msb={level},images={level}"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    match cli.command {
        Command::Run(args) => {
            init_logging(args.log_level);
            match msb::run::run(&args) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("msb: {e}");
                    std::process::exit(e.code);
                }
            }
        }
        Command::Volume(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(msb::volume::main(&args));
        }
        Command::Pull(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(msb::image::pull(&args));
        }
        Command::Load(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(msb::image::load(&args));
        }
        Command::Image(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(msb::image::main(&args));
        }
        Command::Registry(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(msb::image::registry(&args));
        }
        Command::Serve(args) => {
            init_logging(args.log_level);
            std::process::exit(msb::serve::main(&args));
        }
        Command::SandboxSupervisor(args) => {
            init_logging(LogLevel::Info);
            std::process::exit(msb::sandbox::supervisor::main(&args.name, &args.home));
        }
        Command::Create(a) => {
            init_logging(a.log_level);
            finish(sandbox_cmd::create(&a))
        }
        Command::Exec(a) => sandbox(|h| sandbox_cmd::exec::exec(h, &a)),
        Command::Shell(a) => sandbox(|h| sandbox_cmd::exec::shell(h, &a)),
        Command::Cp(a) => sandbox(|_| sandbox_cmd::cp(&a)),
        Command::Ls(a) => sandbox(|_| sandbox_cmd::ls(&a)),
        Command::Inspect(a) => sandbox(|_| sandbox_cmd::inspect(&a)),
        Command::Stop(a) => sandbox(|_| sandbox_cmd::stop(&a)),
        Command::Start(a) => sandbox(|_| sandbox_cmd::start(&a)),
        Command::Rm(a) => sandbox(|_| sandbox_cmd::rm(&a)),
    }
}

/// Runs a sandbox command with the state directory and leaves with its
/// status.
fn sandbox(op: impl FnOnce(&std::path::Path) -> msb::sandbox::Result<i32>) -> ! {
    init_logging(LogLevel::Warn);
    finish(sandbox_cmd::home().and_then(|h| op(&h)))
}

/// Leaves with the status of a sandbox command (errors are printed).
fn finish(result: msb::sandbox::Result<i32>) -> ! {
    std::process::exit(result.unwrap_or_else(|e| sandbox_cmd::fail(&e)))
}
