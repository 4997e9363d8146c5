//! `--filter`: a SQL WHERE clause over the records, evaluated by polars-sql one batch at
//! a time. Columns: `id`, `caption`, `source`, `image` (path or file name of the image,
//! null when embedded without one), `row` (row number in its input) and every other
//! field of the input under its own name, plus the MedTrinity caption parts an input
//! lacks when the clause names them (`modality`, `organ`, `roi_location`, `roi_area`,
//! `texture`, `relations`: [`caption_parts::part_columns`]). Examples:
//! `source = 'slake'`, `caption ILIKE '%computed tomography%'`, `row < 100`,
//! `length(caption) > 500 AND source IN ('pmc', 'roco')`, `modality = 'CT' AND organ = 'liver'`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use polars::chunked_array::cast::CastOptions;
use polars::prelude::*;
use serde_json::Value;

use super::sample::Batch;
use crate::core::caption_parts::{self, PARTS};
use crate::core::error::{contain_panic, usage};

/// A compiled `--filter` expression.
///
/// Each input column gets its type from the first batch that has values in it (the
/// clause is checked on the first batch with [`Filter::check`] before any row is used)
/// and keeps it: later batches
/// are read with that type (a value that does not convert is null, as SQL's `TRY_CAST`),
/// so a clause that held for the first batch cannot fail on a later one because a
/// column there happened to be all null or written as text.
#[derive(Clone)]
pub(crate) struct Filter {
    text: String,
    expr: Expr,
    /// The caption parts (indices into [`PARTS`]) the clause names.
    parts: Vec<usize>,
    /// The type each read column was given when first seen.
    types: Arc<Mutex<HashMap<String, DataType>>>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({:?})", self.text)
    }
}

/// The columns every batch has, whatever its input.
const FIXED: [&str; 5] = ["id", "caption", "source", "image", "row"];

impl Filter {
    /// Compiles a SQL WHERE clause; a syntax error is a usage error (and so is a panic
    /// in the SQL compiler, which polars-sql has on some inputs).
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let expr = contain_panic("the SQL compiler", || {
            polars::sql::sql_expr(text).map_err(anyhow::Error::from)
        })
        .map_err(|e| usage(format!("--filter `{text}`: {e:#}")))?;
        let names = expr.clone().meta().root_names();
        let parts = (0..PARTS.len())
            .filter(|&i| names.iter().any(|n| n.as_str() == PARTS[i]))
            .collect();
        Ok(Filter {
            text: text.to_string(),
            expr,
            parts,
            types: Arc::default(),
        })
    }

    /// Evaluates the clause on the run's first batch before any row is used, fixing the
    /// types of the input's columns: a clause that reads a column the input lacks, or
    /// compares it with the wrong type, fails here as a usage error.
    pub(crate) fn check(&self, first: &Batch) -> Result<()> {
        self.mask(first).map(drop)
    }

    /// Which records of `batch` match. A reference to a column the input does not have
    /// (or any other evaluation error) is a usage error naming the available columns.
    pub(crate) fn mask(&self, batch: &Batch) -> Result<Vec<bool>> {
        let n = batch.len();
        let frame = self.frame(batch)?;
        let keep = contain_panic("the --filter evaluation", || {
            frame
                .lazy()
                .select([self.expr.clone().alias("__keep")])
                .collect()
                .and_then(|df| df.column("__keep")?.cast(&DataType::Boolean))
                .map_err(anyhow::Error::from)
        })
        .map_err(|e| {
            let mut names: Vec<String> = FIXED.iter().map(|s| s.to_string()).collect();
            for name in batch.extra_names() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            usage(format!(
                "--filter `{}`: {e:#} (columns: {})",
                self.text,
                names.join(", ")
            ))
        })?;
        let keep = keep
            .bool()
            .map_err(|e| usage(format!("--filter `{}`: {e}", self.text)))?;
        Ok(match keep.len() {
            1 => vec![keep.get(0).unwrap_or(false); n],
            _ => (0..n).map(|i| keep.get(i).unwrap_or(false)).collect(),
        })
    }

    /// The batch as a polars frame: the fixed columns as documented, the input's own
    /// with the type each was first given, and null columns for those earlier batches
    /// had and this one lacks.
    fn frame(&self, batch: &Batch) -> Result<DataFrame> {
        let n = batch.len();
        let extras = batch.extra_names();
        let mut columns: Vec<Column> = FIXED.iter().map(|name| fixed_column(batch, name)).collect();
        let own: Vec<Column> = extras
            .iter()
            .filter(|name| !FIXED.contains(&name.as_str()))
            .map(|name| {
                let values: Vec<Value> = (0..n).map(|i| batch.extra_value(i, name)).collect();
                json_column(name, &values)
            })
            .collect();
        // Held only to read and record types, not while the columns are built.
        let mut types = self.types.lock().unwrap_or_else(|p| p.into_inner());
        for column in own {
            let name = column.name().to_string();
            let column = match types.get(&name).filter(|t| **t != DataType::Null) {
                Some(t) if t != column.dtype() => column
                    .cast_with_options(t, CastOptions::NonStrict)
                    .map_err(|e| usage(format!("--filter: column `{name}`: {e}")))?,
                Some(_) => column,
                None => {
                    types.insert(name, column.dtype().clone());
                    column
                }
            };
            columns.push(column);
        }
        for (name, dtype) in types.iter().filter(|(name, _)| !extras.contains(name)) {
            columns.push(Column::full_null(name.as_str().into(), n, dtype));
        }
        let missing: Vec<usize> = (self.parts.iter().copied())
            .filter(|&p| !extras.iter().any(|e| e == PARTS[p]))
            .collect();
        if !missing.is_empty() {
            let rows: Vec<[Option<String>; 6]> = (0..n)
                .map(|i| caption_parts::part_columns(batch.caption(i).unwrap_or_default()))
                .collect();
            for p in missing {
                let values: Vec<Option<&str>> = rows.iter().map(|r| r[p].as_deref()).collect();
                columns.push(Column::new(PARTS[p].into(), values));
            }
        }
        DataFrame::new(n, columns)
            .map_err(|e| usage(format!("--filter: cannot build columns: {e}")))
    }
}

/// One of the columns every batch has.
fn fixed_column(batch: &Batch, name: &str) -> Column {
    let n = batch.len();
    match name {
        "id" => Column::new(
            name.into(),
            (0..n).map(|i| batch.id(i).into_owned()).collect::<Vec<_>>(),
        ),
        "caption" => Column::new(
            name.into(),
            (0..n).map(|i| batch.caption(i)).collect::<Vec<_>>(),
        ),
        "source" => Column::new(
            name.into(),
            (0..n).map(|i| batch.source(i)).collect::<Vec<_>>(),
        ),
        "image" => Column::new(
            name.into(),
            (0..n).map(|i| batch.image(i).name()).collect::<Vec<_>>(),
        ),
        _ => Column::new(
            name.into(),
            (0..n as u64)
                .map(|i| batch.first_row + i)
                .collect::<Vec<_>>(),
        ),
    }
}

/// A typed column from JSON values: booleans, integers, floats or strings (anything
/// else is compared as its JSON text); null when every value is.
fn json_column(name: &str, values: &[Value]) -> Column {
    let all = |f: fn(&Value) -> bool| values.iter().all(|v| v.is_null() || f(v));
    let name = PlSmallStr::from(name);
    if all(Value::is_null) {
        Column::full_null(name, values.len(), &DataType::Null)
    } else if all(Value::is_boolean) {
        Column::new(name, values.iter().map(Value::as_bool).collect::<Vec<_>>())
    } else if all(Value::is_i64) {
        Column::new(name, values.iter().map(Value::as_i64).collect::<Vec<_>>())
    } else if all(Value::is_number) {
        Column::new(name, values.iter().map(Value::as_f64).collect::<Vec<_>>())
    } else {
        let text = values.iter().map(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        });
        Column::new(name, text.collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::data::sample::{ImageSource, Sample};
    use serde_json::json;

    fn batch() -> Batch {
        let s = |id: &str, caption: &str, source: &str, year: i64| Sample {
            id: id.into(),
            image: ImageSource::File(format!("imgs/{id}.png").into()),
            caption: Some(caption.into()),
            source: Some(source.into()),
            extra: [("year".to_string(), json!(year))].into_iter().collect(),
        };
        Batch::owned(
            0,
            10,
            vec![
                s("a", "Axial CT of the liver.", "slake", 2019),
                s("b", "MRI of the brain, T2 weighted.", "roco", 2021),
                s("c", "CT angiography of the chest.", "roco", 2023),
            ],
        )
    }

    #[test]
    fn where_clauses_select_rows() {
        let b = batch();
        let cases = [
            ("source = 'roco'", vec![false, true, true]),
            ("caption ILIKE '%ct %' OR id = 'b'", vec![true, true, true]),
            (
                "caption LIKE '%CT%' AND year > 2020",
                vec![false, false, true],
            ),
            (
                "row >= 11 AND image LIKE 'imgs/b%'",
                vec![false, true, false],
            ),
            ("length(caption) > 25", vec![false, true, true]),
            ("true", vec![true, true, true]),
        ];
        for (sql, want) in cases {
            assert_eq!(Filter::parse(sql).unwrap().mask(&b).unwrap(), want, "{sql}");
        }
    }

    /// A batch of records whose `year` fields are `years` (absent where None).
    fn years(first_row: u64, years: &[Option<Value>]) -> Batch {
        let samples = years
            .iter()
            .enumerate()
            .map(|(i, y)| Sample {
                id: format!("r{}", first_row + i as u64),
                image: ImageSource::File(format!("imgs/{i}.png").into()),
                caption: Some("x".into()),
                source: None,
                extra: y.iter().map(|y| ("year".to_string(), y.clone())).collect(),
            })
            .collect();
        Batch::owned(0, first_row, samples)
    }

    #[test]
    fn a_column_keeps_the_type_the_first_batch_gave_it() {
        let f = Filter::parse("year > 2020").unwrap();
        f.check(&years(0, &[Some(json!(2019)), Some(json!(2023))]))
            .unwrap();
        // All null here: once a Boolean column, which `> 2020` cannot compare.
        let nulls = years(2, &[Some(Value::Null), Some(Value::Null)]);
        assert_eq!(f.mask(&nulls).unwrap(), [false, false]);
        // Written as text here: read as the numbers they are, or null.
        let text = years(4, &[Some(json!("2024")), Some(json!("unknown"))]);
        assert_eq!(f.mask(&text).unwrap(), [true, false]);
        // Absent from every record of a later batch: null.
        assert_eq!(f.mask(&years(6, &[None])).unwrap(), [false]);
        // Absent from the first batch: refused before any row, naming the columns.
        let err = Filter::parse("year > 2020")
            .unwrap()
            .check(&years(0, &[None, None]))
            .unwrap_err();
        assert_eq!(crate::core::error::exit_code(&err), 2);
        assert!(
            err.to_string()
                .contains("(columns: id, caption, source, image, row)"),
            "{err}"
        );
    }

    #[test]
    fn caption_parts_are_columns_when_named() {
        let b = batch();
        let keep = |sql: &str| Filter::parse(sql).unwrap().mask(&b).unwrap();
        assert_eq!(keep("modality = 'CT'"), vec![true, false, true]);
        assert_eq!(
            keep("organ = 'brain' OR organ = 'liver'"),
            vec![true, true, false]
        );
        assert_eq!(keep("roi_area IS NULL"), vec![true; 3]);
    }

    #[test]
    fn bad_clauses_are_usage_errors_naming_columns() {
        let err = Filter::parse("scanner = 'CT'")
            .unwrap()
            .mask(&batch())
            .unwrap_err();
        assert_eq!(crate::core::error::exit_code(&err), 2);
        assert!(
            err.to_string()
                .contains("columns: id, caption, source, image, row, year"),
            "{err}"
        );
        let err = Filter::parse("source = = 'x'").unwrap_err();
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }
}
