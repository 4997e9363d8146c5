//! Errors that carry a meaning for the exit status, and the exit codes themselves.
//!
//! Every other error is an [`anyhow::Error`] with context naming the file, row or
//! field at fault; it exits with [`EXIT_ERROR`].

/// Success.
pub const EXIT_OK: i32 = 0;
/// A runtime error: the command could not do its job.
pub const EXIT_ERROR: i32 = 1;
/// A usage error: bad flags or arguments, or a subcommand that does not exist yet.
pub const EXIT_USAGE: i32 = 2;
/// The command finished, but some inputs failed (they are listed in the run directory).
pub const EXIT_PARTIAL: i32 = 3;

/// Failures with a dedicated exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The user asked for something that cannot work (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The work finished but some inputs failed (exit 3).
    #[error("{failed} of {total} inputs had errors; they are listed above{where_}")]
    PartialInputs {
        failed: usize,
        total: usize,
        /// Where the full list was written, as ` and in <path>`, or empty.
        where_: String,
    },
}

/// The process exit code for an error returned by a subcommand.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    match err.downcast_ref::<Failure>() {
        Some(Failure::Usage(_)) => EXIT_USAGE,
        Some(Failure::PartialInputs { .. }) => EXIT_PARTIAL,
        None => EXIT_ERROR,
    }
}

/// Runs `f`, turning a panic inside it (third-party decoders meeting hostile bytes) into
/// the error `"{what} crashed: <panic message>"`, so one bad file, row group or image
/// cannot end a run over millions.
pub fn contain_panic<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow::anyhow!("{what} crashed: {msg}"))
    })
}

/// Shorthand for a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Failure::Usage(msg.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_failure_kind() {
        assert_eq!(exit_code(&usage("bad flag")), EXIT_USAGE);
        let partial = Failure::PartialInputs {
            failed: 1,
            total: 3,
            where_: String::new(),
        };
        assert_eq!(exit_code(&partial.into()), EXIT_PARTIAL);
        assert_eq!(exit_code(&anyhow::anyhow!("disk on fire")), EXIT_ERROR);
        // Context layers keep the classification.
        let wrapped = anyhow::Error::from(Failure::Usage("x".into())).context("while parsing");
        assert_eq!(exit_code(&wrapped), EXIT_USAGE);
    }
}
