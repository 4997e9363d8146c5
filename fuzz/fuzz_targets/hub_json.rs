//! What the Hub (or anything answering in its place) sends back: byte 0 selects a tree
//! listing page (JSON array of entries, every file checked), a revision answer (JSON with
//! `sha`), or the headers a listing and a redirect carry (`Link` next page, `Location`
//! joined to the request URL, `RateLimit` reset).
#![no_main]
use libfuzzer_sys::fuzz_target;
use medtrinity::core::hub::api::parse_tree_page;
use medtrinity::core::hub::http::{join_url, next_link, ratelimit_reset};
use medtrinity::core::hub::repo::is_commit;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let Ok(page) = serde_json::from_slice::<serde_json::Value>(rest) else {
                return;
            };
            if let Ok(files) = parse_tree_page(&page) {
                for f in &files {
                    // Every accepted path is relative and free of `.`/`..` parts.
                    assert!(!f.path.starts_with('/') && !f.path.split('/').any(|p| p == ".."));
                    let _ = f.etag();
                }
            }
        }
        1 => {
            let Ok(answer) = serde_json::from_slice::<serde_json::Value>(rest) else {
                return;
            };
            let _ = answer.get("sha").and_then(|s| s.as_str()).map(is_commit);
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (base, header) = text.split_once('\n').unwrap_or((&text, ""));
            let _ = next_link(header);
            let _ = join_url(base, header);
            let _ = ratelimit_reset(header);
        }
    }
});
