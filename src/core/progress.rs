//! Progress bars on stderr with rate and ETA; hidden when stderr is not a terminal or
//! output is quiet, so pipes and CI logs stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every bar created from now on (`-q`).
pub fn hide_all() {
    HIDDEN.store(true, Ordering::Relaxed);
}

fn visible() -> bool {
    !HIDDEN.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// A bar counting `unit`s towards `total` (a spinner with a rate when the total is unknown).
pub(crate) fn bar(total: Option<u64>, unit: &str, message: impl Into<String>) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(&format!(
                "{{msg}} {{wide_bar:.cyan/blue}} {{human_pos}}/{{human_len}} {unit} \
                 [{{elapsed_precise}}, {{per_sec}}, ETA {{eta}}]"
            ))
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{msg}} {{human_pos}} {unit} [{{elapsed_precise}}, {{per_sec}}]"
            ))
            .expect("valid template"),
        ),
    };
    pb.set_message(message.into());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// A stack of bars (an overall one and one per active transfer), hidden like [`bar`].
pub(crate) fn multi() -> indicatif::MultiProgress {
    if visible() {
        indicatif::MultiProgress::new()
    } else {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    }
}

/// A byte-counting bar for `multi` with size, rate and ETA.
pub(crate) fn byte_bar(
    multi: &indicatif::MultiProgress,
    total: u64,
    message: impl Into<String>,
) -> ProgressBar {
    let pb = multi.add(ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg:30!} {wide_bar:.cyan/blue} {bytes}/{total_bytes} [{bytes_per_sec}, ETA {eta}]",
        )
        .expect("valid template")
        .progress_chars("=> "),
    ));
    pb.set_message(message.into());
    pb
}
