//! Answering one chunk of a benchmark into its resumable answer file, and merging the
//! chunks' files into the run's `answers.jsonl` (question order, each question once).
//!
//! A chunk folder is held by one process at a time (a lock file); its answer file is
//! append-only, so a worker killed at any point loses at most the batch in flight and a
//! rerun answers only the questions that file lacks.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::answering::{Answered, answer};
use super::answers::Answer;
use super::chunks::Chunk;
use crate::core::files::write_atomic;
use crate::core::jsonl_output::JsonlOutput;
use crate::core::model::engine::captioner::Captioner;
use crate::core::vqa::Id;
use crate::core::vqa::questions::Question;

/// What answering a chunk did.
#[derive(Debug, Default)]
pub(crate) struct ChunkOutcome {
    /// Answered by this call.
    pub answered: usize,
    /// Already in the answer file.
    pub resumed: usize,
    pub failed: Vec<(Id, String)>,
    pub new_tokens: usize,
    /// Time spent answering (model loading excluded).
    pub seconds: f64,
}

/// How to answer.
pub(crate) struct ChunkJob<'a, 'm> {
    /// The model, loaded on first use: a chunk with nothing left to answer loads none.
    pub captioner: &'a mut dyn FnMut() -> Result<&'m Captioner>,
    pub batch_size: usize,
    pub seed: u64,
    /// Called with (questions done, new tokens) after every batch.
    pub on_batch: &'a mut dyn FnMut(usize, usize),
}

/// Answers the questions of `chunk` (of all `questions`) not yet in its answer file
/// under the run directory `root`; `failures.json` in the chunk folder lists the
/// questions that could not be answered this time.
pub(crate) fn answer_chunk(
    root: &Path,
    chunk: Chunk,
    questions: &[Question],
    job: ChunkJob,
) -> Result<ChunkOutcome> {
    let dir = chunk.dir(root);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _lock = lock(&dir, chunk)?;
    let mut out = JsonlOutput::open(&chunk.answers(root), "question_id")?;
    let mut outcome = ChunkOutcome::default();
    let mut todo = Vec::new();
    for q in &questions[chunk.range(questions.len())] {
        if out.contains(&q.id.to_string()) {
            outcome.resumed += 1;
        } else {
            todo.push(q);
        }
    }
    (job.on_batch)(outcome.resumed, 0);
    let started = std::time::Instant::now();
    for batch in todo.chunks(job.batch_size.max(1)) {
        let mut tokens = 0;
        let Answered { lines, failed } =
            answer(&mut *job.captioner, batch, job.seed, &mut |n| tokens += n)?;
        out.write_all(&lines)?;
        outcome.answered += lines.len();
        outcome.new_tokens += tokens;
        outcome.failed.extend(failed);
        (job.on_batch)(batch.len(), tokens);
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    let failures: Vec<Value> = failure_list(&outcome.failed)
        .into_iter()
        .map(|(input, error)| json!({"input": input, "error": error}))
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&failures)?;
    bytes.push(b'\n');
    write_atomic(&dir.join("failures.json"), &bytes)?;
    Ok(outcome)
}

/// Failed questions as (id, message) pairs: the form of `failures.json` in a chunk
/// folder, which [`merge`] reads back.
pub(crate) fn failure_list(failed: &[(Id, String)]) -> Vec<(String, String)> {
    failed
        .iter()
        .map(|(id, e)| (id.to_string(), format!("question {id}: {e}")))
        .collect()
}

/// The chunks merged.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    /// One answer per answered question, in question order.
    pub answers: Vec<Answer>,
    /// Questions without an answer, with why (the message a chunk recorded, if any).
    pub missing: Vec<(Id, String)>,
}

/// Reads every chunk's answers, writes `root/answers.jsonl` (the LLaVA answer lines,
/// in question order) and returns the answers.
pub(crate) fn merge(root: &Path, chunks: usize, questions: &[Question]) -> Result<Merged> {
    let mut lines: HashMap<String, (Value, String)> = HashMap::new();
    let mut reasons: HashMap<String, String> = HashMap::new();
    for chunk in Chunk::all(chunks) {
        read_lines(&chunk.answers(root), &mut lines)?;
        read_reasons(&chunk.dir(root).join("failures.json"), &mut reasons);
    }
    let mut merged = Merged::default();
    let mut text = String::new();
    for q in questions {
        let key = q.id.to_string();
        match lines.remove(&key) {
            Some((line, answer)) => {
                text.push_str(&serde_json::to_string(&line)?);
                text.push('\n');
                merged.answers.push(Answer {
                    question_id: q.id.clone(),
                    text: answer,
                });
            }
            None => {
                let why = reasons.remove(&key).unwrap_or_else(|| {
                    format!("question {key}: not answered (an interrupted chunk? rerun to resume)")
                });
                merged.missing.push((q.id.clone(), why));
            }
        }
    }
    write_atomic(&root.join("answers.jsonl"), text.as_bytes())?;
    Ok(merged)
}

/// How many questions of `chunk` its answer file under `root` still lacks.
pub(crate) fn unanswered(root: &Path, chunk: Chunk, questions: &[Question]) -> Result<usize> {
    let mut lines = HashMap::new();
    read_lines(&chunk.answers(root), &mut lines)?;
    Ok(questions[chunk.range(questions.len())]
        .iter()
        .filter(|q| !lines.contains_key(&q.id.to_string()))
        .count())
}

/// Complete lines in a chunk's answer file: its progress (0 when there is none yet).
pub(crate) fn answered_in(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn read_lines(path: &Path, lines: &mut HashMap<String, (Value, String)>) -> Result<()> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            // The last line of a killed worker: it is answered again on resume.
            continue;
        };
        let (Some(id), Some(text)) = (value.get("question_id"), value["text"].as_str()) else {
            bail!("{}:{}: not a LLaVA answer line", path.display(), i + 1);
        };
        let key = Id::from_json(id, "question_id")
            .with_context(|| format!("{}:{}", path.display(), i + 1))?
            .to_string();
        let text = text.to_string();
        lines.entry(key).or_insert((value, text));
    }
    Ok(())
}

fn read_reasons(path: &Path, reasons: &mut HashMap<String, String>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let Ok(Value::Array(items)) = serde_json::from_str(&text) else {
        return;
    };
    for item in items {
        if let (Some(id), Some(e)) = (item["input"].as_str(), item["error"].as_str()) {
            reasons.insert(id.to_string(), e.to_string());
        }
    }
}

/// Holds the chunk folder's lock, or says which process works on it.
fn lock(dir: &Path, chunk: Chunk) -> Result<File> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "chunk {chunk} is being answered by another process ({} is locked); wait for it or stop it",
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(
                "{}: this filesystem has no file locks; make sure no other process answers chunk {chunk}",
                path.display()
            );
            Ok(file)
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
