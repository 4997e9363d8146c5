//! `mt inspect`: one streaming pass over any dataset input, spread over threads by
//! parquet row group (or whole file), producing a mergeable tally and then a report.

pub mod contamination;
pub(crate) mod dist;
pub(crate) mod plots;
pub(crate) mod records;
pub(crate) mod render;
pub(crate) mod report;
pub(crate) mod tally;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Result;

use crate::core::data::filter::Filter;
use crate::core::data::{Dataset, Flow, ReadOptions, Role, Sample, Unit};
use crate::core::progress;
pub(crate) use tally::{Tally, TallyOptions};

/// Errors met while reading, as (input index, message).
pub(crate) type InputErrors = Vec<(usize, String)>;

/// Everything `inspect` needs to know.
#[derive(Debug, Clone)]
pub(crate) struct InspectOptions {
    pub read: ReadOptions,
    pub tally: TallyOptions,
    pub filter: Option<Filter>,
    pub threads: usize,
}

/// Parquet inputs with no image column, as failures: image statistics were asked for,
/// so a captions-only table is most likely the wrong file.
pub(crate) fn shards_without_images(dataset: &Dataset) -> Vec<(usize, anyhow::Error)> {
    let msg = "no image column (expected `image` or `file_name`); use --no-images or --columns for the rest";
    (dataset.shards.iter().enumerate())
        .filter_map(|(i, s)| {
            s.as_ref()
                .filter(|s| s.roles.image.is_none())
                .map(|s| (i, s))
        })
        .map(|(i, s)| (i, anyhow::anyhow!("{}: {msg}", s.path.display())))
        .collect()
}

/// Inspects every unit of `dataset`; `open_failures` are inputs that could not be opened.
/// Returns the merged tally (build the report from it) — errors are only fatal ones
/// (a bad `--filter`, a full disk); bad inputs are recorded in the tally.
pub(crate) fn inspect(
    dataset: &Dataset,
    open_failures: Vec<(usize, anyhow::Error)>,
    opts: &InspectOptions,
) -> Result<Tally> {
    let failed: Vec<usize> = open_failures.iter().map(|(i, _)| *i).collect();
    let units = dataset.units(&failed, opts.threads);
    if let Some(filter) = &opts.filter {
        check_filter(dataset, &units, &opts.read, filter)?;
    }
    let bar = progress::bar(dataset.known_rows(&units), "rows", "inspecting");
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let fatal: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let threads = opts.threads.clamp(1, units.len().max(1));
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut tally = Tally::new(&opts.tally);
                    while !abort.load(Ordering::Relaxed) {
                        let Some(unit) = units.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        if let Err(e) = inspect_unit(dataset, unit, opts, &mut tally, &bar) {
                            abort.store(true, Ordering::Relaxed);
                            fatal
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                    tally
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("inspect worker panicked"))
            .collect()
    });
    bar.finish_and_clear();
    if let Some(e) = fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut all = Tally::new(&opts.tally);
    for (i, e) in open_failures {
        all.fail(i, format!("{e:#}"));
    }
    for t in tallies {
        all.merge(t)?;
    }
    all.failures.sort();
    Ok(all)
}

/// Checks `filter` on the first records batch before any row is tallied (and fixes the
/// types of the columns it reads), so a clause that cannot hold fails at once rather
/// than part way through; read errors are left to the pass itself.
fn check_filter(
    dataset: &Dataset,
    units: &[Unit],
    read: &ReadOptions,
    filter: &Filter,
) -> Result<()> {
    let records = units
        .iter()
        .filter(|u| dataset.inputs[u.input].role == Role::Records);
    for unit in records {
        let mut checked = None;
        let _ = dataset.read(unit, read, &mut |batch| match batch {
            Ok(b) if !b.is_empty() => {
                checked = Some(filter.check(&b));
                Flow::Stop
            }
            Ok(_) => Flow::Continue,
            Err(_) => Flow::Stop,
        });
        if let Some(result) = checked {
            return result;
        }
    }
    Ok(())
}

/// Reads one unit into `tally`. Returns Err only for fatal errors.
fn inspect_unit(
    dataset: &Dataset,
    unit: &Unit,
    opts: &InspectOptions,
    tally: &mut Tally,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let role = dataset.inputs[unit.input].role;
    let mut fatal = None;
    let read = dataset.read(unit, &opts.read, &mut |batch| match batch {
        Err(e) => {
            tally.fail(unit.input, format!("{e:#}"));
            Flow::Continue
        }
        Ok(b) => {
            bar.inc(b.len() as u64);
            let step = match (&opts.filter, role) {
                (Some(f), Role::Records) => f
                    .mask(&b)
                    .and_then(|m| tally.add_batch(&b, role, Some(&m), &opts.tally)),
                _ => tally.add_batch(&b, role, None, &opts.tally),
            };
            match step {
                Ok(()) => Flow::Continue,
                Err(e) => {
                    fatal = Some(e);
                    Flow::Stop
                }
            }
        }
    });
    if let Some(e) = fatal {
        return Err(e);
    }
    if let Err(e) = read {
        tally.fail(unit.input, format!("{e:#}"));
    }
    Ok(())
}

/// The first `n` records (matching `filter`) in input order, reading no further than
/// needed; also returns the errors met on the way, by input.
pub(crate) fn head(
    dataset: &Dataset,
    open_failures: Vec<(usize, anyhow::Error)>,
    read: &ReadOptions,
    filter: Option<&Filter>,
    n: usize,
) -> Result<(Vec<Sample>, InputErrors)> {
    let failed: Vec<usize> = open_failures.iter().map(|(i, _)| *i).collect();
    let mut errors: Vec<(usize, String)> = open_failures
        .into_iter()
        .map(|(i, e)| (i, format!("{e:#}")))
        .collect();
    let mut out = Vec::new();
    let mut fatal = None;
    for unit in dataset.units(&failed, 1) {
        if out.len() >= n || dataset.inputs[unit.input].role != Role::Records {
            continue;
        }
        let read_result = dataset.read(&unit, read, &mut |batch| {
            let b = match batch {
                Ok(b) => b,
                Err(e) => {
                    errors.push((unit.input, format!("{e:#}")));
                    return Flow::Continue;
                }
            };
            let keep = match filter.map(|f| f.mask(&b)).transpose() {
                Ok(k) => k,
                Err(e) => {
                    fatal = Some(e);
                    return Flow::Stop;
                }
            };
            for i in 0..b.len() {
                if out.len() < n && keep.as_ref().is_none_or(|k| k[i]) {
                    out.push(b.sample(i));
                }
            }
            if out.len() >= n {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        if let Some(e) = fatal.take() {
            return Err(e);
        }
        if let Err(e) = read_result {
            errors.push((unit.input, format!("{e:#}")));
        }
    }
    Ok((out, errors))
}
