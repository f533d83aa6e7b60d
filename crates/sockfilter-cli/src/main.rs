//! The `sockfilter` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod check;
mod supervise;
mod text;
mod watch;

#[derive(Parser)]
#[command(
    name = "sockfilter",
    version,
    about = "Linux socket filter: see and stop bind, listen, connect, accept and close, system-wide"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every socket's bind, listen, connect, accept and close as it happens.
    Watch(watch::Args),
    /// Validate a policy file.
    Check(check::Args),
    /// Run a program with its socket calls held until sockfilter decides.
    Supervise(supervise::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Watch(args) => watch::run(args),
        Command::Check(args) => check::run(args),
        Command::Supervise(args) => supervise::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sockfilter: {err:#}");
            ExitCode::FAILURE
        }
    }
}
