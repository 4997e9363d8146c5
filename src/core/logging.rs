//! Tracing setup: human-readable events on stderr, JSON events in the run's `log.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The log file of the current run; events are dropped until one is attached.
#[derive(Clone, Default)]
pub struct LogSink {
    file: Arc<Mutex<Option<BufWriter<File>>>>,
}

impl LogSink {
    /// Sends JSON events to `path` (appending) from now on.
    pub(crate) fn attach(&self, path: &Path) -> Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        *self.lock() = Some(BufWriter::new(file));
        Ok(())
    }

    /// Flushes and closes the log file.
    pub(crate) fn detach(&self) {
        if let Some(mut f) = self.lock().take() {
            let _ = f.flush();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BufWriter<File>>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One event's worth of output to the log file.
pub struct SinkWriter(LogSink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock().as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.0.lock().as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.clone())
    }
}

/// The stderr filter for `-v`/`-q` counts: `RUST_LOG` wins when set.
pub(crate) fn stderr_filter(verbose: u8, quiet: u8) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_env("RUST_LOG") {
        return filter;
    }
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (0, 1) => "warn",
        (0, _) => "error",
        (1, _) => "debug",
        _ => "trace",
    };
    // Our own crate at the chosen level; dependencies one step quieter unless tracing.
    let deps = if verbose >= 2 { "debug" } else { "warn" };
    // The JPEG 2000 decoder warns, without naming the file, about codestream quirks it
    // decodes anyway (e.g. "Non conformant codestream TPsot==TNsot"): shown with -v.
    let codec = if verbose >= 1 { deps } else { "error" };
    EnvFilter::new(format!(
        "{deps},jpeg2k={codec},medtrinity={level},mt={level}"
    ))
}

/// Installs the global subscriber; returns the sink that run directories attach to.
pub fn init(verbose: u8, quiet: u8) -> LogSink {
    let sink = LogSink::default();
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_target(verbose > 0)
        .without_time()
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_filter(stderr_filter(verbose, quiet));
    let file = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(sink.clone())
        .with_filter(EnvFilter::new("warn,medtrinity=debug,mt=debug"));
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    sink
}
