//! `msb`: the micro-VM launcher.
//!
//! The `run` and `volume` subcommands are tracked in the project's issues;
//! until they land this binary says so plainly and exits with status 2.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => println!("msb {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "msb: no subcommands are available yet; serve a directory with `virtiofsd-msb` (see README.md)"
            );
            std::process::exit(2);
        }
    }
}
