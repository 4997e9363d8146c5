//! `mt eval slake|vqa-rad|pathvqa`: load the split, fix the plan in the run directory,
//! answer every chunk (here, or one worker process per chunk), merge the chunks into
//! answers.jsonl, score with both scorers, write scores.json, rows.jsonl and report.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use candle_core::DType;
use serde_json::{Value, json};

use super::args::{DTypeArg, GpusArgs, ModelArgs, to_argv};
use super::eval::RunArgs;
use super::{Context, finish_failures, print};
use crate::core::error::usage;
use crate::core::eval::answers::{Answer, align};
use crate::core::eval::chunk_run::{
    ChunkJob, ChunkOutcome, answer_chunk, answered_in, failure_list, merge, unanswered,
};
use crate::core::eval::chunks::{Chunk, root_of};
use crate::core::eval::plan::{self, Decoding, Plan, QuestionDigests};
use crate::core::eval::{breakdown, llava_med, multimedeval, report, workers};
use crate::core::files::write_atomic;
use crate::core::model::engine::captioner::Captioner;
use crate::core::model::engine::generate::GenerationConfig;
use crate::core::model::load::checkpoint::{content_identity, device, model_name};
use crate::core::model::quant::QuantKind;
use crate::core::progress;
use crate::core::vqa::Bench;
use crate::core::vqa::Id;
use crate::core::vqa::export as vqa_export;
use crate::core::vqa::questions::{self as vqa, LoadOptions, Question};
use crate::core::vqa::truth::Truth;

/// (where, what) of every input that failed.
type Failures = Vec<(String, String)>;

/// Runs `mt eval <bench>`.
pub(crate) fn run(bench: Bench, a: &RunArgs, ctx: &mut Context) -> Result<()> {
    check(a)?;
    let chunk = a.chunk;
    let Some(run) = &ctx.run else {
        return Err(usage(format!(
            "mt eval {} keeps its answers in the run directory: drop --no-run-dir",
            bench.name()
        )));
    };
    let here = run.path().to_path_buf();
    let root = match chunk {
        Some(_) => root_of(&here).to_path_buf(),
        None => here,
    };
    // A rerun without --chunks/--gpu/--dtype (the merge after a Slurm array) continues
    // the plan already there; a new run without --gpu or --cpu takes GPU 0 when a CUDA
    // build sees one.
    let previous = plan::previous(&root);
    let on_gpu_0;
    let a = match a.device.default_gpu() {
        Some(gpu) if previous.is_none() => {
            on_gpu_0 = RunArgs {
                device: GpusArgs {
                    gpu: vec![gpu],
                    cpu: false,
                },
                ..a.clone()
            };
            &on_gpu_0
        }
        _ => a,
    };
    let (questions, bad_rows) = load_questions(bench, a)?;
    let bad_rows_count = bad_rows.len();
    let chunks = match chunk {
        Some(c) => c.count,
        None => a
            .chunks
            .or_else(|| (!a.device.gpu.is_empty()).then_some(a.device.gpu.len()))
            .or_else(|| previous.as_ref().map(|p| p.chunks))
            .unwrap_or(1),
    };
    let dtype_name = match (a.model.dtype, &previous) {
        (Some(d), _) => format!("{:?}", DType::from(d)).to_lowercase(),
        (None, Some(p)) if a.device.gpu.is_empty() => p.dtype.clone(),
        (None, _) => if a.device.gpu.is_empty() {
            "f32"
        } else {
            "bf16"
        }
        .to_string(),
    };
    let plan = Plan {
        version: plan::VERSION,
        bench: bench.name().into(),
        split: a.split.clone(),
        data: canonical(&a.data),
        image_folder: a.image_folder.as_deref().map(canonical),
        checkpoint: canonical(a.model.path()),
        checkpoint_files: content_identity(a.model.path())?,
        vision_tower: a.model.vision_tower.as_deref().map(canonical),
        vision_tower_files: a
            .model
            .vision_tower
            .as_deref()
            .map(content_identity)
            .transpose()?,
        questions: questions.len(),
        question_digests: QuestionDigests::of(&questions),
        chunks,
        decoding: decoding(a),
        dtype: dtype_name,
        quantize: a
            .quantize
            .quantize
            .map(|q| QuantKind::from(q).name().to_string()),
        seed: ctx.seed,
    };
    plan.check_or_write(&root)?;
    if let Some(c) = chunk {
        // A `--chunk K/N` worker answers its chunk and stops (exit 3 if some failed).
        let done = answer_here(a, c, &root, &questions, &plan, ctx)?;
        report_chunk(ctx, c, &done);
        let failures = failure_list(&done.failed);
        let (failed, total) = (failures.len(), done.answered + done.failed.len());
        return finish_failures(ctx, failures, failed, total);
    }
    let truth_json = vqa_export::to_json_lines(&vqa_export::ground_truth(&questions))?;
    write_atomic(&root.join("questions.json"), truth_json.as_bytes())?;
    if chunks == 1 {
        let only = Chunk { index: 0, count: 1 };
        let done = answer_here(a, only, &root, &questions, &plan, ctx)?;
        report_chunk(ctx, only, &done);
    } else {
        run_workers(bench, a, &plan, &root, &questions)?;
    }
    let merged = merge(&root, chunks, &questions)?;
    let answered = merged.answers.len();
    let scored = score_and_report(bench, a, &plan, &root, &questions, merged.answers, ctx)?;
    let failures: Failures = bad_rows
        .into_iter()
        .chain(
            merged
                .missing
                .into_iter()
                .map(|(id, why)| (id.to_string(), why)),
        )
        .collect();
    if let Some(run) = &mut ctx.run {
        run.set_count("questions", questions.len());
        run.set_count("answered", answered);
        run.set_count("scored", scored);
    }
    let failed = failures.len();
    let total = questions.len() + bad_rows_count;
    finish_failures(ctx, failures, failed, total)
}

/// Rejects option values that make no sense.
fn check(a: &RunArgs) -> Result<()> {
    if a.batch_size == 0 || a.chunks == Some(0) || a.limit == Some(0) {
        return Err(usage(
            "--batch-size, --chunks and --limit must be at least 1",
        ));
    }
    a.decoding.check()?;
    if a.chunk.is_some() && a.device.gpu.len() > 1 {
        return Err(usage("a --chunk runs on one GPU: give one --gpu index"));
    }
    if !a.device.gpu.is_empty() && !cfg!(feature = "cuda") {
        return Err(usage(
            "this mt was built without GPU support; rebuild with `--features cuda` or use --cpu",
        ));
    }
    if !a.model.path().is_dir() {
        return Err(usage(format!(
            "--model {}: no such checkpoint folder",
            a.model.path().display()
        )));
    }
    Ok(())
}

/// The split's questions (first --limit), and its unreadable rows as failures.
fn load_questions(bench: Bench, a: &RunArgs) -> Result<(Vec<Question>, Failures)> {
    let opts = LoadOptions {
        all_languages: a.all_languages,
        image_folder: a.image_folder.clone(),
    };
    let loaded = vqa::load(bench, &a.data, &a.split, &opts)?;
    let mut seen = std::collections::HashSet::new();
    let mut bad: Failures = Vec::new();
    let mut questions = Vec::with_capacity(loaded.questions.len());
    for q in loaded.questions {
        if seen.insert(q.id.clone()) {
            questions.push(q);
        } else {
            let what = format!("question {}", q.id);
            bad.push((
                what.clone(),
                format!("{what}: duplicate id (the first one is kept)"),
            ));
        }
    }
    let mut rejected: Failures = loaded
        .rejected
        .into_iter()
        .map(|r| (format!("{}: {}", r.file, r.at), r.to_string()))
        .collect();
    rejected.append(&mut bad);
    if let Some(n) = a.limit {
        questions.truncate(n);
        // Rows past the limit are not part of this evaluation.
        for (_, e) in rejected.drain(..) {
            tracing::warn!("{e}");
        }
    }
    if questions.is_empty() {
        bail!(
            "{}: no {} questions in split `{}` ({} layout)",
            a.data.display(),
            bench.title(),
            a.split,
            loaded.layout
        );
    }
    tracing::info!(
        "{}: {} {} questions ({}), {} rows rejected",
        a.data.display(),
        questions.len(),
        bench.title(),
        loaded.layout,
        rejected.len()
    );
    Ok((questions, rejected))
}

fn decoding(a: &RunArgs) -> Decoding {
    let d = &a.decoding;
    if a.reference_decoding {
        return Decoding {
            conv_mode: d.conv_mode.clone(),
            ..Decoding::reference(a.model.path(), d.max_new_tokens)
        };
    }
    Decoding {
        max_new_tokens: d.max_new_tokens,
        temperature: d.temperature(),
        top_p: d.top_p(),
        top_k: d.top_k(),
        conv_mode: d.conv_mode.clone(),
    }
}

fn canonical(path: &Path) -> String {
    path.canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Answers `chunk` in this process, with a progress bar.
fn answer_here(
    a: &RunArgs,
    chunk: Chunk,
    root: &Path,
    questions: &[Question],
    plan: &Plan,
    ctx: &mut Context,
) -> Result<ChunkOutcome> {
    let n = chunk.range(questions.len()).len();
    let seed = ctx.seed;
    let model = std::cell::OnceCell::new();
    let mut captioner = || -> Result<&Captioner> {
        if model.get().is_none() {
            let _ = model.set(load_model(a, plan, ctx)?);
        }
        Ok(model.get().expect("set above"))
    };
    let bar = progress::bar(Some(n as u64), "questions", "answering");
    let started = std::time::Instant::now();
    let mut tokens = 0usize;
    let mut on_batch = |done: usize, new_tokens: usize| {
        tokens += new_tokens;
        bar.inc(done as u64);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("answering, {:.1} tokens/s", tokens as f64 / secs));
    };
    let job = ChunkJob {
        captioner: &mut captioner,
        batch_size: a.batch_size,
        seed,
        on_batch: &mut on_batch,
    };
    let done = answer_chunk(root, chunk, questions, job)?;
    bar.finish_and_clear();
    Ok(done)
}

fn report_chunk(ctx: &mut Context, chunk: Chunk, done: &ChunkOutcome) {
    tracing::info!(
        answered = done.answered,
        resumed = done.resumed,
        failed = done.failed.len(),
        new_tokens = done.new_tokens,
        seconds = done.seconds,
        "chunk {chunk}: {} answered now ({:.2} questions/s, {:.1} tokens/s), {} before, {} failed",
        done.answered,
        done.answered as f64 / done.seconds.max(1e-9),
        done.new_tokens as f64 / done.seconds.max(1e-9),
        done.resumed,
        done.failed.len()
    );
    if let Some(run) = &mut ctx.run {
        run.set_count("answered_now", done.answered);
        run.set_count("resumed", done.resumed);
        run.set_count("new_tokens", done.new_tokens);
        run.set_count("answer_seconds", done.seconds);
    }
}

/// The checkpoint, ready to answer in the plan's dtype; its config and decoding settings
/// go to the run dir.
fn load_model(a: &RunArgs, plan: &Plan, ctx: &mut Context) -> Result<Captioner> {
    let decoding = &plan.decoding;
    let gpu = a.device.gpu.first().copied();
    let device = device(gpu)?;
    let dtype = DType::from(plan_dtype(plan)?);
    let mut ckpt = a.model.open(&device, dtype)?;
    a.quantize.apply(&mut ckpt);
    let generation = GenerationConfig {
        max_new_tokens: decoding.max_new_tokens,
        temperature: decoding.temperature,
        top_p: decoding.top_p,
        top_k: decoding.top_k,
        stop_tokens: Vec::new(),
    };
    if let Some(run) = &mut ctx.run {
        run.set_device(a.quantize.describe(gpu, dtype));
        run.write_json("model.json", &ckpt.config)?;
    }
    let conv_mode = a.decoding.conv_mode.as_deref();
    let mut captioner =
        Captioner::new(ckpt, "", generation, Vec::new(), true, ctx.seed, conv_mode)?;
    captioner.use_llava_tokenization(a.model.path(), "")?;
    if let Some(run) = &ctx.run {
        run.write_json("generation.json", captioner.generation())?;
    }
    tracing::info!("model {} loaded", captioner.model_name);
    Ok(captioner)
}

/// One worker process per chunk (GPUs dealt out in turn), watched with one progress bar
/// over all questions; a worker that fails fails the run (its chunk resumes on rerun).
fn run_workers(
    bench: Bench,
    a: &RunArgs,
    plan: &Plan,
    root: &Path,
    questions: &[Question],
) -> Result<()> {
    let (chunks, seed) = (plan.chunks, plan.seed);
    let exe = std::env::current_exe().context("cannot find the mt executable for the workers")?;
    let mut commands = Vec::with_capacity(chunks);
    for c in Chunk::all(chunks) {
        if unanswered(root, c, questions)? == 0 {
            continue;
        }
        let gpus = &a.device.gpu;
        let gpu = (!gpus.is_empty()).then(|| gpus[c.index % gpus.len()]);
        let worker = worker_args(a, c, gpu, plan_dtype(plan)?);
        let mut cmd = worker_command(&exe, bench, &worker, root, seed)?;
        let dir = c.dir(root);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let log = dir.join("stderr.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stderr(file);
        commands.push((c, cmd));
    }
    let bar = progress::bar(Some(questions.len() as u64), "questions", "answering");
    bar.set_message(format!("answering in {chunks} worker processes"));
    let statuses = workers::run_all(commands, &mut || {
        let done: usize = Chunk::all(chunks)
            .map(|c| answered_in(&c.answers(root)))
            .sum();
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let failed: Vec<String> = statuses
        .iter()
        .filter(|(_, s)| !matches!(s.code(), Some(0 | 3)))
        .map(|(c, s)| {
            let log = c.dir(root).join("stderr.log");
            let last = std::fs::read_to_string(&log).unwrap_or_default();
            let last = last
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("chunk {c} ({s}: {}; see {})", last.trim(), log.display())
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {chunks} workers failed: {}; rerun the same command with --run-dir {} to resume",
            failed.len(),
            failed.join(", "),
            root.display()
        );
    }
    Ok(())
}

/// The settings of chunk `chunk`'s worker: this run's, on `gpu` (or the CPU) in the
/// plan's dtype, answering that chunk only.
fn worker_args(a: &RunArgs, chunk: Chunk, gpu: Option<usize>, dtype: DTypeArg) -> RunArgs {
    RunArgs {
        model: ModelArgs {
            dtype: Some(dtype),
            ..a.model.clone()
        },
        device: GpusArgs {
            gpu: gpu.into_iter().collect(),
            cpu: gpu.is_none(),
        },
        chunks: None,
        chunk: Some(chunk),
        ..a.clone()
    }
}

/// The dtype the plan fixed for every chunk.
fn plan_dtype(plan: &Plan) -> Result<DTypeArg> {
    <DTypeArg as clap::ValueEnum>::from_str(&plan.dtype, false)
        .map_err(|_| anyhow::anyhow!("eval.json: unknown dtype `{}`", plan.dtype))
}

/// `mt -q --seed S --run-dir ROOT eval <bench> ARGS`: `worker`'s flags, as parsed.
fn worker_command(
    exe: &Path,
    bench: Bench,
    worker: &RunArgs,
    root: &Path,
    seed: u64,
) -> Result<Command> {
    let mut cmd = Command::new(exe);
    cmd.arg("-q")
        .args(["--seed", &seed.to_string()])
        .arg("--run-dir")
        .arg(root)
        .args(["eval", bench.name()])
        .args(to_argv(worker)?);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill this child
        // when the parent dies (no orphaned workers holding GPUs and chunk locks).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    Ok(cmd)
}

/// The newest other run directory beside `root` that finished the same evaluation
/// without `--quantize` (see [`Plan::same_but_quantization`]): its path and scores.
fn unquantized_twin(plan: &Plan, root: &Path) -> Option<(PathBuf, Value)> {
    // `root` itself is among them, and skipped as every quantized run is.
    let parent = root.canonicalize().ok()?.parent()?.to_path_buf();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&parent)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find_map(|dir| {
        let theirs = plan::previous(&dir)?;
        if theirs.quantize.is_some() || !plan.same_but_quantization(&theirs) {
            return None;
        }
        let scores = std::fs::read_to_string(dir.join("scores.json")).ok()?;
        Some((dir, serde_json::from_str(&scores).ok()?))
    })
}

/// A percentage for the console, `-` when there is none.
fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// Scores the merged answers with both scorers and writes scores.json, rows.jsonl and
/// report.md; prints the table (or the scores with --json). Returns the rows scored.
fn score_and_report(
    bench: Bench,
    a: &RunArgs,
    plan: &Plan,
    root: &Path,
    questions: &[Question],
    answers: Vec<Answer>,
    ctx: &mut Context,
) -> Result<usize> {
    let answered = answers.len();
    let truth: Vec<Truth> = questions.iter().map(truth_of).collect();
    let aligned = align(truth, answers);
    let (s, rows) = llava_med::score(&aligned);
    let (m, mm_rows) = multimedeval::score(&aligned);
    let scored = breakdown::scored(&aligned.pairs, &rows);
    let breakdowns = breakdown::breakdowns(&scored);
    let worst = breakdown::worst_open(&scored, 20);
    let model = model_name(a.model.path());
    let header = report::ReportHeader {
        bench,
        split: &a.split,
        model: &model,
        checkpoint: &plan.checkpoint,
        data: &plan.data,
        questions: questions.len(),
        answered,
        decoding: &plan.decoding.describe(),
    };
    let markdown = report::markdown(&header, &s, &m, &breakdowns, &worst);
    write_atomic(&root.join("report.md"), markdown.as_bytes())?;
    let (open, closed) = bench.paper();
    let mut scores = json!({
        "bench": bench.name(), "split": a.split, "model": model,
        "questions": questions.len(), "answered": answered,
        "llava_med": s, "multimedeval": m,
        "paper": {"open_recall": open, "closed_yes_no_accuracy": closed},
        "breakdowns": breakdowns,
    });
    let twin = plan
        .quantize
        .as_ref()
        .and_then(|_| unquantized_twin(plan, root));
    if let Some((dir, theirs)) = &twin {
        scores["unquantized"] = json!({
            "run": dir, "llava_med": theirs["llava_med"], "multimedeval": theirs["multimedeval"],
        });
    }
    write_atomic(
        &root.join("scores.json"),
        format!("{:#}\n", scores).as_bytes(),
    )?;
    let by_id: HashMap<&Id, &multimedeval::RowScore> = mm_rows.iter().map(|r| (&r.id, r)).collect();
    let mut lines = String::new();
    for (t, ans, r) in &scored {
        let mm = by_id.get(&t.id);
        let line = json!({
            "id": t.id, "answer_type": r.answer_type, "question": t.question,
            "reference": t.answer, "answer": ans.text, "meta": t.meta,
            "llava_med": r, "multimedeval": mm,
        });
        lines.push_str(&serde_json::to_string(&line)?);
        lines.push('\n');
    }
    write_atomic(&root.join("rows.jsonl"), lines.as_bytes())?;
    if ctx.json {
        print(&format!("{}\n", serde_json::to_string(&scores)?))?;
    } else {
        let table = report::llava_med_table(&s, Some(bench));
        let beside = match (&twin, &plan.quantize) {
            (Some((dir, theirs)), Some(q)) => format!(
                "{q}: open recall {}, closed accuracy {}; unquantized ({}): {}, {}\n",
                percent(s.recall),
                percent(s.yes_no_accuracy),
                dir.display(),
                percent(theirs["llava_med"]["recall"].as_f64()),
                percent(theirs["llava_med"]["yes_no_accuracy"].as_f64()),
            ),
            _ => String::new(),
        };
        print(&format!(
            "{table}\n{beside}report: {}\n",
            root.join("report.md").display()
        ))?;
    }
    Ok(aligned.pairs.len())
}

fn truth_of(q: &Question) -> Truth {
    let kind: Value = serde_json::to_value(q.answer_type).unwrap_or(Value::Null);
    Truth {
        id: q.id.clone(),
        question: format!("<image>\n{}", q.question),
        answer: q.answer.clone(),
        answer_type: kind.as_str().map(str::to_string),
        image: Some(q.image.label().to_string()),
        meta: q.meta.clone(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse<'a>(argv: impl IntoIterator<Item = &'a str>) -> RunArgs {
        Probe::try_parse_from(std::iter::once("mt").chain(argv))
            .unwrap()
            .args
    }

    #[test]
    fn a_worker_gets_the_run_settings_for_its_chunk_and_gpu() {
        let a = parse([
            "--ckpt",
            "m",
            "--data",
            "d",
            "--vision-tower",
            "v",
            "--image-folder",
            "i",
            "--all-languages",
            "--gpu",
            "0,1",
            "--temperature",
            "0.1",
            "--top-k",
            "3",
            "--limit",
            "5",
            "--chunks",
            "4",
        ]);
        let worker = worker_args(&a, Chunk { index: 1, count: 4 }, Some(1), DTypeArg::Bf16);
        let argv = to_argv(&worker).unwrap();
        assert_eq!(
            argv.join(" "),
            "--model m --vision-tower v --dtype bf16 --data d --split test --image-folder i \
             --all-languages --gpu 1 --batch-size 16 --temperature 0.1 --top-k 3 --limit 5 \
             --chunk 1/4 --max-new-tokens 1024"
        );
        let back = parse(argv.iter().map(String::as_str));
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&worker).unwrap()
        );
        let on_cpu = worker_args(&a, Chunk { index: 0, count: 4 }, None, DTypeArg::F32);
        let argv = to_argv(&on_cpu).unwrap();
        assert!(argv.contains(&"--cpu".to_string()) && !argv.contains(&"--gpu".to_string()));
        let reference = parse(["--model", "m", "--data", "d", "--reference-decoding"]);
        let argv = to_argv(&worker_args(
            &reference,
            Chunk { index: 0, count: 2 },
            None,
            DTypeArg::F32,
        ))
        .unwrap();
        assert!(
            argv.contains(&"--reference-decoding".to_string()),
            "{argv:?}"
        );
    }
}
