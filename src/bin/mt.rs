//! The `mt` binary: parse, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use medtrinity::cmd::{self, Cli};
use medtrinity::core::{error, logging, progress};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let log = logging::init(cli.global.verbose, cli.global.quiet);
    if cli.global.quiet > 0 {
        progress::hide_all();
    }
    match cmd::execute(cli, argv, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error::exit_code(&e) as u8)
        }
    }
}
