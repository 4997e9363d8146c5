//! The command line itself: help, usage errors, exit codes, completions, run directories.

use medtrinity::cmd::completions;

use crate::common::{self, mt, mt_in, root};

const HELPERS: [&str; 2] = ["completions", "replay"];

const SUBCOMMANDS: [&str; 10] = [
    "download", "inspect", "caption", "chat", "serve", "roi", "train", "finetune", "eval",
    "convert",
];

#[test]
fn help_lists_every_subcommand() {
    let r = mt(&["--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for sub in SUBCOMMANDS.iter().chain(&HELPERS) {
        assert!(
            r.stdout.contains(&format!("  {sub} ")),
            "`{sub}` missing from:\n{}",
            r.stdout
        );
    }
    for flag in [
        "--verbose",
        "--quiet",
        "--json",
        "--run-dir",
        "--no-run-dir",
        "--seed",
    ] {
        assert!(r.stdout.contains(flag), "{flag} missing");
    }
}

#[test]
fn every_subcommand_has_help_with_examples() {
    for sub in SUBCOMMANDS.iter().chain(&HELPERS) {
        let r = mt(&[sub, "--help"]);
        assert_eq!(r.code, 0, "{sub}: {}", r.stderr);
        assert!(
            r.stdout.contains("Examples:"),
            "{sub} --help has no examples"
        );
        assert!(
            r.stdout.contains(&format!("mt {sub}")),
            "{sub} examples do not use the command"
        );
    }
}

/// One spelling per idea: `--model`, `--image-folder` and `--data` are the flags' names in
/// every command; `--ckpt`, `--images` and `--input` are only ever their aliases.
#[test]
fn one_spelling_per_idea() {
    use clap::CommandFactory;
    const ALIASES: [(&str, &str); 3] = [
        ("ckpt", "model"),
        ("images", "image-folder"),
        ("input", "data"),
    ];
    fn check(command: &clap::Command, path: &str, seen: &mut usize) {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            for (alias, name) in ALIASES {
                assert_ne!(long, alias, "{path}: --{alias} is the alias of --{name}");
                let aliases = arg.get_all_aliases().unwrap_or_default();
                if aliases.contains(&alias) {
                    assert_eq!(long, name, "{path}: --{alias} is an alias of --{long}");
                    *seen += 1;
                }
            }
        }
        for sub in command.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()), seen);
        }
    }
    let mut seen = 0;
    check(&medtrinity::cmd::Cli::command(), "mt", &mut seen);
    // Every command that loads a checkpoint or reads records with images has one.
    assert!(seen >= 8, "only {seen} aliased flags found");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["inspect"],
        vec!["inspect", "no/such/path"],
        vec!["inspect", "testdata/medtrinity-demo", "--head", "x"],
        vec!["--bogus"],
        vec!["inspect", "Cargo.toml"],
        vec![
            "inspect",
            "testdata/medtrinity-demo",
            "--filter",
            "no_such_column = 1",
        ],
        vec![
            "inspect",
            "testdata/medtrinity-demo",
            "--filter",
            "caption = = 1",
        ],
    ] {
        let r = mt(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

#[test]
fn version_is_printed() {
    let r = mt(&["--version"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("mt "), "{}", r.stdout);
}

/// The committed completion scripts match the CLI. Regenerate with
/// `MT_BLESS=1 cargo test --test it cli::completions`.
#[test]
fn completions_are_current() {
    for shell in ["bash", "zsh", "fish"] {
        let fresh = completions::script(shell);
        let rel = format!("completions/{}", completions::file_name(shell));
        common::check_snapshot(&rel, &fresh, "cargo test --test it cli::completions");
        let r = mt(&["completions", shell]);
        assert_eq!(r.code, 0);
        assert_eq!(r.stdout.as_bytes(), fresh.as_slice());
    }
}

#[test]
fn run_directories_record_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = root().join("testdata/medtrinity-demo");
    let r = mt_in(
        tmp.path(),
        &["--seed", "5", "inspect", demo.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let runs: Vec<_> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let dir = &runs[0];
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("inspect-")
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(run["seed"], 5);
    assert_eq!(run["command"], "inspect");
    assert_eq!(run["argv"][1], "--seed");
    assert_eq!(run["config"]["args"]["paths"][0], demo.to_str().unwrap());
    assert_eq!(
        run["config"]["args"]["contact_sheet"], 24,
        "defaults are resolved"
    );
    assert_eq!(run["counts"]["rows"], 33);
    assert!(run["started"].is_string() && run["ended"].is_string() && run["host"].is_string());
    assert_eq!(run["version"], env!("CARGO_PKG_VERSION"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["totals"]["rows"], 33);
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert!(log.lines().count() >= 1);
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("log lines are JSON");
        assert!(event["level"].is_string());
    }
    // No temporary files are left behind.
    assert!(
        std::fs::read_dir(dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp"))
    );

    // An explicit --run-dir is used as is, and a failed run says so.
    let explicit = tmp.path().join("my-run");
    let r = mt_in(
        tmp.path(),
        &[
            "--run-dir",
            explicit.to_str().unwrap(),
            "inspect",
            "nope.parquet",
        ],
    );
    assert_eq!(r.code, 2);
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(explicit.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 2);
    assert!(run["error"].as_str().unwrap().contains("nope.parquet"));
}

#[test]
fn replay_reruns_a_recorded_command() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = root().join("testdata/medtrinity-demo");
    let first = tmp.path().join("first");
    let r = mt_in(
        tmp.path(),
        &[
            "--run-dir",
            first.to_str().unwrap(),
            "--json",
            "inspect",
            demo.to_str().unwrap(),
            "--columns",
            "id,caption",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dry = mt_in(
        tmp.path(),
        &["replay", first.to_str().unwrap(), "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("--json inspect") && !dry.stdout.contains("--run-dir"),
        "{}",
        dry.stdout
    );
    let again = mt_in(
        tmp.path(),
        &["replay", first.join("run.json").to_str().unwrap()],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.stdout, r.stdout,
        "same inputs, same seed, same bytes out"
    );
    let runs: Vec<_> = std::fs::read_dir(tmp.path().join("runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1, "the replay has a run directory of its own");
    let bad = mt_in(tmp.path(), &["replay", demo.to_str().unwrap()]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("run.json"), "{}", bad.stderr);
}

#[test]
fn a_token_file_others_can_read_gets_a_warning_and_the_token_never_shows() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    std::fs::create_dir_all(&home).unwrap();
    let token = "hf_SecretValueThatMustNotLeak123";
    let file = home.join("token");
    std::fs::write(&file, token).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let home_text = home.display().to_string();
    let download = || {
        common::mt_env(
            dir.path(),
            &["--no-run-dir", "download", "org/repo", "--dry-run"],
            &[
                ("HF_HOME", home_text.as_str()),
                ("HF_HUB_OFFLINE", "1"),
                ("HF_TOKEN", ""),
            ],
        )
    };
    let r = download();
    assert!(
        r.stderr.contains("can be read by other users") && r.stderr.contains("chmod 600"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(token) && !r.stdout.contains(token));
    // With mode 600 there is nothing to say.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = download();
    assert!(
        !r.stderr.contains("can be read by other users"),
        "{}",
        r.stderr
    );
}
