//! `--filter`: a SQL WHERE clause over the records, evaluated by polars-sql one batch at
//! a time. Columns: `id`, `caption`, `source`, `image` (path or file name of the image,
//! null when embedded without one), `row` (row number in its input) and every other
//! field of the input under its own name. Examples:
//! `source = 'slake'`, `caption ILIKE '%computed tomography%'`, `row < 100`,
//! `length(caption) > 500 AND source IN ('pmc', 'roco')`.

use anyhow::Result;
use polars::prelude::*;
use serde_json::Value;

use super::sample::{Batch, ImageRef};
use crate::core::error::usage;

/// A compiled `--filter` expression.
#[derive(Clone)]
pub struct Filter {
    text: String,
    expr: Expr,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({:?})", self.text)
    }
}

impl Filter {
    /// Compiles a SQL WHERE clause; a syntax error is a usage error.
    pub fn parse(text: &str) -> Result<Self> {
        let expr =
            polars::sql::sql_expr(text).map_err(|e| usage(format!("--filter `{text}`: {e}")))?;
        Ok(Filter {
            text: text.to_string(),
            expr,
        })
    }

    /// The clause as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Which records of `batch` match. A reference to a column the input does not have
    /// (or any other evaluation error) is a usage error naming the available columns.
    pub fn mask(&self, batch: &Batch) -> Result<Vec<bool>> {
        let n = batch.len();
        let frame =
            frame(batch).map_err(|e| usage(format!("--filter: cannot build columns: {e}")))?;
        let names: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = frame
            .lazy()
            .select([self.expr.clone().alias("__keep")])
            .collect()
            .and_then(|df| df.column("__keep")?.cast(&DataType::Boolean))
            .map_err(|e| {
                usage(format!(
                    "--filter `{}`: {e} (columns: {})",
                    self.text,
                    names.join(", ")
                ))
            })?;
        let keep = out
            .bool()
            .map_err(|e| usage(format!("--filter `{}`: {e}", self.text)))?;
        Ok(match keep.len() {
            1 => vec![keep.get(0).unwrap_or(false); n],
            _ => (0..n).map(|i| keep.get(i).unwrap_or(false)).collect(),
        })
    }
}

/// The batch as a polars frame with the documented columns.
fn frame(batch: &Batch) -> PolarsResult<DataFrame> {
    let n = batch.len();
    let ids: Vec<String> = (0..n).map(|i| batch.id(i).into_owned()).collect();
    let captions: Vec<Option<&str>> = (0..n).map(|i| batch.caption(i)).collect();
    let sources: Vec<Option<&str>> = (0..n).map(|i| batch.source(i)).collect();
    let images: Vec<Option<String>> = (0..n)
        .map(|i| match batch.image(i) {
            ImageRef::None => None,
            ImageRef::Bytes { path, .. } => path.map(str::to_string),
            ImageRef::File(p) => Some(p.to_string_lossy().into_owned()),
            ImageRef::Archived(name) => Some(name.to_string()),
        })
        .collect();
    let rows: Vec<u64> = (0..n as u64).map(|i| batch.first_row + i).collect();
    let mut columns = vec![
        Column::new("id".into(), ids),
        Column::new("caption".into(), captions),
        Column::new("source".into(), sources),
        Column::new("image".into(), images),
        Column::new("row".into(), rows),
    ];
    for name in batch.extra_names() {
        if columns.iter().any(|c| c.name().as_str() == name) {
            continue;
        }
        let values: Vec<Value> = (0..n).map(|i| batch.extra_value(i, &name)).collect();
        columns.push(json_column(&name, &values));
    }
    DataFrame::new(n, columns)
}

/// A typed column from JSON values: booleans, integers, floats or strings (anything
/// else is compared as its JSON text).
fn json_column(name: &str, values: &[Value]) -> Column {
    let all = |f: fn(&Value) -> bool| values.iter().all(|v| v.is_null() || f(v));
    let name = PlSmallStr::from(name);
    if all(Value::is_boolean) {
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

    #[test]
    fn bad_clauses_are_usage_errors_naming_columns() {
        let err = Filter::parse("modality = 'CT'")
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
