//! The `mt` binary: parse, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use medtrinity::cmd::{self, Cli};
use medtrinity::core::{error, logging, progress};

fn main() -> ExitCode {
    keep_freed_memory();
    error::quiet_contained_panics();
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

/// Tensor code allocates and frees many large buffers. glibc serves each one with a
/// fresh mmap (and returns it on free), so every op pays page faults and zeroing for
/// its output; keeping large blocks in the heap made CPU captioning ~20% faster.
/// Peak memory is unchanged: freed blocks are reused, not added to.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
