//! The worker processes of a multi-chunk benchmark run: one per chunk, all started at
//! once, watched until every one has ended (the caller's `on_poll` shows progress).

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result};

use super::chunks::Chunk;

/// Starts every command, then waits for all; returns each chunk's exit status.
pub(crate) fn run_all(
    commands: Vec<(Chunk, Command)>,
    on_poll: &mut dyn FnMut(),
) -> Result<Vec<(Chunk, ExitStatus)>> {
    let mut running: Vec<(Chunk, Child)> = Vec::with_capacity(commands.len());
    for (chunk, mut command) in commands {
        match command.spawn() {
            Ok(child) => running.push((chunk, child)),
            Err(e) => {
                for (_, child) in &mut running {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e).with_context(|| format!("cannot start the worker of chunk {chunk}"));
            }
        }
    }
    let mut ended = Vec::with_capacity(running.len());
    while !running.is_empty() {
        let mut i = 0;
        while i < running.len() {
            match running[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (chunk, _) = running.swap_remove(i);
                    ended.push((chunk, status));
                }
                Ok(None) => i += 1,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot watch the worker of chunk {}", running[i].0)
                    });
                }
            }
        }
        on_poll();
        if !running.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    ended.sort_by_key(|(c, _)| c.index);
    Ok(ended)
}
