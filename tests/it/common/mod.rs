//! Helpers shared by the integration tests: run the real `mt` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path inside testdata/.
pub fn testdata(rel: &str) -> PathBuf {
    root().join("testdata").join(rel)
}

/// A copy of the test checkpoint `testdata/models/<name>` (its files) in `dst`, which is
/// created; returns `dst`.
pub fn copy_checkpoint(name: &str, dst: &Path) -> PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(testdata(&format!("models/{name}"))).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dst.join(path.file_name().unwrap())).unwrap();
    }
    dst.to_path_buf()
}

/// The result of one `mt` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Parses stdout as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Parses stdout as JSON Lines.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `mt args...` in `dir` (run directories land there).
pub fn mt_in(dir: &Path, args: &[&str]) -> Run {
    mt_env(dir, args, &[])
}

/// Runs `mt args...` in `dir` with extra environment variables.
pub fn mt_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_mt"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("MT_RUNS_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("mt runs");
    finish(out)
}

/// Runs `mt args...` from the repository root without a run directory.
pub fn mt(args: &[&str]) -> Run {
    let mut all = vec!["--no-run-dir"];
    all.extend_from_slice(args);
    mt_in(&root(), &all)
}

/// Runs `mt args...` with `input` on stdin.
pub fn mt_stdin(args: &[&str], input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mt"))
        .arg("--no-run-dir")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mt starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    finish(child.wait_with_output().unwrap())
}

/// Compares `fresh` with the committed file at `rel` (from the repository root); with
/// `MT_BLESS=1` in the environment, writes `fresh` there first. `rerun` is the test
/// command that regenerates it.
pub fn check_snapshot(rel: &str, fresh: &[u8], rerun: &str) {
    let path = root().join(rel);
    if std::env::var_os("MT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fresh).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{rel} is stale; if the change is deliberate: MT_BLESS=1 {rerun}"
    );
}

/// Reads testdata/<dir>/expected.json (reference numbers computed by the fixture script).
pub fn expected(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(testdata(rel)).unwrap()).unwrap()
}

/// `mt --json eval score --gt GT --pred PRED EXTRA...` (no run directory).
pub fn eval_score_json(gt: &Path, pred: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "--json",
        "eval",
        "score",
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mt(&args)
}

/// Largest absolute element of a tensor (any float dtype).
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    let t = t.to_dtype(candle_core::DType::F32).unwrap().abs().unwrap();
    t.flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let f32 = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    max_abs(&(f32(a) - f32(b)).unwrap())
}

/// Waits until `ready()` holds (polled every millisecond for at most `limit`) or `child`
/// exits, then sends it SIGKILL and reaps it. `Ok(())`: the kill landed mid-run (the child
/// died of SIGKILL); `Err(status)`: the child had exited on its own first, so a kill -9
/// test learned nothing and must try again earlier or fail.
pub fn kill_9_when(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let started = std::time::Instant::now();
    while !ready() && child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < limit, "not ready after {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.kill(); // fails only when the child is already reaped
    let status = child.wait().unwrap();
    if status.signal() == Some(9) {
        Ok(())
    } else {
        Err(status)
    }
}

/// The Python of the interop tests: `$MT_TEST_PYTHON` (`.ci/run` provisions it with
/// tests/interop/venv.sh), else `python3`, if it imports every one of `modules`. If it
/// does not, the test is skipped with a message saying so, except under `CI=true`,
/// where a missing interpreter or package fails the test: CI proves the interop claims.
pub fn test_python(modules: &[&str]) -> Option<PathBuf> {
    let py = std::env::var_os("MT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let why = match Command::new(&py)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
    {
        Ok(out) if out.status.success() => return Some(py),
        Ok(out) => String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string(),
        Err(e) => e.to_string(),
    };
    let msg = format!(
        "no Python with {} ({}: {why}); set MT_TEST_PYTHON to the interpreter \
         tests/interop/venv.sh prints",
        modules.join(", "),
        py.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{msg} (under CI=true that is a failure, not a skip)");
    eprintln!("skipped: {msg}");
    None
}

/// A JSONL of the first `n` single-turn records with PNG images of the LLaVA fixture
/// (`testdata/llava/medtrinity_instruct.jsonl`), written as `dir/data.jsonl`.
pub fn llava_png_records(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(testdata("llava/medtrinity_instruct.jsonl")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(".png\""))
        .take(n)
        .collect();
    assert_eq!(lines.len(), n);
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `mt finetune` of `model` for one step on one record (`dir/data.jsonl`, llama3
/// template), run directory `run`.
pub fn finetune_one(dir: &Path, model: &Path, run: &Path) -> Run {
    let data = llava_png_records(dir, 1);
    let images = testdata("llava/images");
    let [model, data, images, run] = [model, &data, &images, run].map(|p| p.to_str().unwrap());
    mt_in(
        dir,
        &[
            "finetune",
            "--model",
            model,
            "--data",
            data,
            "--image-folder",
            images,
            "--cpu",
            "--run-dir",
            run,
            "--max-steps",
            "1",
            "--batch-size",
            "1",
            "--conv-mode",
            "llama3",
        ],
    )
}

/// What the MedTrinity-25M `conversation.py` renders for `conversation` in `template`
/// (testdata/templates/prompts.json).
pub fn golden_prompt(template: &str, conversation: &str) -> String {
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("templates/prompts.json")).unwrap())
            .unwrap();
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["conversation"] == conversation
                && c["template"] == template
                && c["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "medtrinity")
        })
        .unwrap_or_else(|| panic!("no golden {template} render of {conversation}"));
    case["prompt"].as_str().unwrap().to_string()
}
