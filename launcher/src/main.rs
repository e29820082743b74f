//! `msb`: the micro-VM launcher (see the `launcher` library).

use clap::Parser;
use launcher::cli::{Cli, Command, LogLevel};
use launcher::exit;

fn init_logging(level: LogLevel) {
    let level = match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("launcher={level}")));
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
            match launcher::run::run(&args) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("msb: {e}");
                    std::process::exit(e.code);
                }
            }
        }
        Command::Volume(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(launcher::volume::main(&args));
        }
        Command::Pull(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(launcher::image::pull(&args));
        }
        Command::Load(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(launcher::image::load(&args));
        }
        Command::Image(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(launcher::image::main(&args));
        }
        Command::Registry(args) => {
            init_logging(LogLevel::Warn);
            std::process::exit(launcher::image::registry(&args));
        }
    }
}
