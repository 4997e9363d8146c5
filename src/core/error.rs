//! Errors that carry a meaning for the exit status, and the exit codes themselves
//! (0, success, is the process default).
//!
//! Every other error is an [`anyhow::Error`] with context naming the file, row or
//! field at fault; it exits with `EXIT_ERROR`.

/// A runtime error: the command could not do its job.
pub(crate) const EXIT_ERROR: i32 = 1;
/// A usage error: bad flags or arguments, or a subcommand that does not exist yet.
pub(crate) const EXIT_USAGE: i32 = 2;
/// The command finished, but some inputs failed (they are listed in the run directory).
pub(crate) const EXIT_PARTIAL: i32 = 3;

/// Failures with a dedicated exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
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

thread_local! {
    /// Whether this thread is inside [`contain_panic`].
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it (third-party decoders meeting hostile bytes) into
/// the error `"{what} crashed: <panic message>"`, so one bad file, row group or image
/// cannot end a run over millions.
pub(crate) fn contain_panic<T>(
    what: &str,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let outer = CONTAINING.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.set(outer);
    result.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow::anyhow!("{what} crashed: {msg}"))
    })
}

/// Keeps the panics that `contain_panic` turns into errors off stderr (they come back
/// as those errors; `-vv` logs where they happened); every other panic goes to the hook
/// installed before, as it did.
pub fn quiet_contained_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CONTAINING.get() {
            tracing::debug!("contained panic: {info}");
        } else {
            previous(info);
        }
    }));
}

/// Shorthand for a usage error.
pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    Failure::Usage(msg.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contained_panic_is_an_error_with_its_message() {
        quiet_contained_panics();
        let e = contain_panic("the decoder", || -> anyhow::Result<()> {
            panic!("bad {}", 7)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "the decoder crashed: bad 7");
        assert_eq!(contain_panic("x", || Ok(3)).unwrap(), 3);
        // Outside contain_panic, panics still reach the previous hook and unwind.
        assert!(std::panic::catch_unwind(|| panic!("plain")).is_err());
    }

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
