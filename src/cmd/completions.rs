//! `mt completions`: shell completion scripts (also kept in completions/).

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use serde::Serialize;

use super::args::ShellArg;
use super::{Cli, print};

/// Print a shell completion script.
#[derive(Debug, clap::Args, Serialize)]
#[command(
    after_help = "Examples:\n  mt completions bash > ~/.local/share/bash-completion/completions/mt\n  \
mt completions zsh > ~/.zfunc/_mt\n  mt completions fish > ~/.config/fish/completions/mt.fish"
)]
pub struct Args {
    /// The shell to generate for.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

/// The completion script for `shell` (bash, zsh or fish).
pub fn script(shell: &str) -> Vec<u8> {
    let shell = match shell {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mt", &mut out);
    out
}

/// The file each script is kept in under completions/.
pub fn file_name(shell: &str) -> String {
    match shell {
        "zsh" => "_mt".into(),
        "fish" => "mt.fish".into(),
        _ => "mt.bash".into(),
    }
}

pub(crate) fn run(args: &Args) -> Result<()> {
    print(&String::from_utf8_lossy(&script(args.shell.name())))
}
