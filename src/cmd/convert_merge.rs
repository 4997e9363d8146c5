//! `mt convert merge`: join the shard outputs of `mt caption --shard I/N` (or a Slurm
//! array) into one file, checking that every shard is there and finished and that each
//! record sits in the shard its id hashes to, so no record is lost or duplicated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::Context;
use crate::core::data::id_text;
use crate::core::progress;
use crate::core::records::{RecordOutput, for_each_record};
use crate::core::shard::{Shard, check_complete, owner};

const EXAMPLES: &str = "\
Examples:
  mt convert merge captions-*-of-00008.jsonl -o captions.jsonl
  mt convert merge captions-*-of-00008.jsonl -o captions.parquet
  mt convert merge captions-0000[0-5]-of-00008.jsonl --allow-incomplete -o partial.jsonl

Every shard 0..N-1 must be given, each with its .done marker (written when the shard's
run read all its inputs), unless --allow-incomplete; a shard whose record count differs
from its marker's is refused. A record whose id does not hash to the shard of its file,
or an id twice in one file, stops the merge with the file and line. Rerunning into an
existing output adds only the ids it lacks. Records that failed in the shards' runs are
counted (their failures.json lists them).";

/// Join shard outputs (`out-0000I-of-0000N.jsonl` or `.parquet`) into one JSONL or parquet file.
#[derive(Debug, clap::Args, Serialize)]
#[command(after_help = EXAMPLES)]
pub struct MergeArgs {
    /// Shard outputs of one run (all N of them).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The merged file (JSONL, or parquet for *.parquet).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Merge what is there even when shards are missing or unfinished.
    #[arg(long)]
    pub allow_incomplete: bool,
}

/// Runs `mt convert merge`.
pub(crate) fn run(args: &MergeArgs, ctx: &mut Context) -> Result<()> {
    let shards = check_complete(&args.inputs, args.allow_incomplete)?;
    let mut out = RecordOutput::open(&args.output, "id")?;
    let bar = progress::bar(None, "records", "merging");
    let (mut added, mut failed) = (0usize, 0u64);
    for (file, shard) in &shards {
        let (records, new) = merge_one(file, shard.shard, &mut out)?;
        if let Some(marker) = &shard.marker {
            let promised = marker["records"].as_u64();
            if promised.is_some_and(|n| n != records as u64) {
                bail!(
                    "{}: {records} records but its .done marker says {}: the file changed after the shard finished; rerun the shard",
                    file.display(),
                    promised.unwrap_or_default()
                );
            }
            failed += marker["failed"].as_u64().unwrap_or(0);
        }
        added += new;
        bar.set_position(out.len() as u64);
    }
    bar.finish_and_clear();
    let total = out.len();
    out.finish()?;
    if let Some(run) = &mut ctx.run {
        run.set_count("shards", shards.len());
        run.set_count("records", total);
        run.set_count("added", added);
        run.set_count("failed_in_shards", failed as usize);
    }
    if failed > 0 {
        tracing::warn!("{failed} records failed in the shards' runs (see their failures.json)");
    }
    let json = serde_json::json!({
        "output": args.output,
        "shards": shards.len(),
        "records": total,
        "added": added,
        "failed_in_shards": failed,
    });
    super::summary(ctx, args.output == Path::new("-"), &json, || {
        format!(
            "merge: {} shards, {total} records in {} ({added} added)",
            shards.len(),
            args.output.display()
        )
    })
}

/// Appends one shard's records that `out` lacks; returns the shard's records and how
/// many were added.
fn merge_one(file: &Path, shard: Shard, out: &mut RecordOutput) -> Result<(usize, usize)> {
    let mut seen = HashSet::new();
    let mut batch: Vec<(String, Value)> = Vec::new();
    let mut added = 0;
    for_each_record(file, &mut |at, record| {
        let Some(id) = record.get("id").and_then(id_text) else {
            bail!("{at}: no `id` (string or number)");
        };
        let home = owner(&id, shard.count);
        if home != shard.index {
            bail!(
                "{at}: id `{id}` belongs to shard {home}, not {}: was a file renamed, or are these shards of different runs?",
                shard.index
            );
        }
        if !seen.insert(id.clone()) {
            bail!("{at}: id `{id}` appears twice in this shard");
        }
        if !out.contains(&id) {
            batch.push((id, record));
        }
        if batch.len() >= 4096 {
            added += batch.len();
            out.write_all(&std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    added += batch.len();
    out.write_all(&batch)?;
    Ok((seen.len(), added))
}
