//! Typed views over the Arrow arrays a parquet shard yields, tolerant of the string,
//! binary and integer flavours different writers choose.

use std::borrow::Cow;

use anyhow::{Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, LargeBinaryArray, LargeStringArray, StringArray,
    StringViewArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;
use serde_json::Value;

/// A string column (`string`, `large_string` or `string_view`).
#[derive(Debug, Clone)]
pub(crate) enum StrColumn {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
}

impl StrColumn {
    /// Views `array` as strings; `name` is only used in the error.
    pub(crate) fn new(name: &str, array: &ArrayRef) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Utf8 => StrColumn::Utf8(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 => StrColumn::Large(array.as_string::<i64>().clone()),
            DataType::Utf8View => StrColumn::View(array.as_string_view().clone()),
            other => bail!("column `{name}` has type {other}, expected a string"),
        })
    }

    /// The value at row `i`, None when null.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        match self {
            StrColumn::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// A binary column (`binary`, `large_binary` or `binary_view`).
#[derive(Debug, Clone)]
pub(crate) enum BinColumn {
    Binary(BinaryArray),
    Large(LargeBinaryArray),
    View(BinaryViewArray),
}

impl BinColumn {
    /// Views `array` as bytes; `name` is only used in the error.
    pub(crate) fn new(name: &str, array: &ArrayRef) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Binary => BinColumn::Binary(array.as_binary::<i32>().clone()),
            DataType::LargeBinary => BinColumn::Large(array.as_binary::<i64>().clone()),
            DataType::BinaryView => BinColumn::View(array.as_binary_view().clone()),
            other => bail!("column `{name}` has type {other}, expected binary"),
        })
    }

    /// The value at row `i`, None when null.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            BinColumn::Binary(a) => a.is_valid(i).then(|| a.value(i)),
            BinColumn::Large(a) => a.is_valid(i).then(|| a.value(i)),
            BinColumn::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// An identifier column: strings, or integers shown in decimal.
#[derive(Debug, Clone)]
pub(crate) enum IdColumn {
    Str(StrColumn),
    Int(ArrayRef),
}

impl IdColumn {
    /// Views `array` as identifiers; `name` is only used in the error.
    pub(crate) fn new(name: &str, array: &ArrayRef) -> Result<Self> {
        if array.data_type().is_integer() {
            return Ok(IdColumn::Int(array.clone()));
        }
        StrColumn::new(name, array).map(IdColumn::Str).map_err(|_| {
            anyhow::anyhow!(
                "column `{name}` has type {}, expected a string or an integer",
                array.data_type()
            )
        })
    }

    /// The identifier at row `i`, None when null.
    pub(crate) fn get(&self, i: usize) -> Option<Cow<'_, str>> {
        match self {
            IdColumn::Str(s) => s.get(i).map(Cow::Borrowed),
            IdColumn::Int(a) => a.is_valid(i).then(|| match json_value(a.as_ref(), i) {
                Value::Number(n) => Cow::Owned(n.to_string()),
                other => Cow::Owned(other.to_string()),
            }),
        }
    }
}

/// The HF `Image` feature: a struct {bytes: binary, path: string}.
#[derive(Debug, Clone)]
pub(crate) struct ImageStructColumn {
    nulls: Option<NullBuffer>,
    bytes: Option<BinColumn>,
    path: Option<StrColumn>,
}

impl ImageStructColumn {
    /// Views `array` as an image struct; `name` is only used in errors.
    pub(crate) fn new(name: &str, array: &ArrayRef) -> Result<Self> {
        let Some(st) = array.as_struct_opt() else {
            bail!(
                "column `{name}` has type {}, expected struct{{bytes, path}}",
                array.data_type()
            );
        };
        let bytes = st
            .column_by_name("bytes")
            .map(|a| BinColumn::new(&format!("{name}.bytes"), a))
            .transpose()?;
        let path = st
            .column_by_name("path")
            .map(|a| StrColumn::new(&format!("{name}.path"), a))
            .transpose()?;
        if bytes.is_none() && path.is_none() {
            bail!("column `{name}` is a struct without `bytes` or `path` fields");
        }
        Ok(ImageStructColumn {
            nulls: st.nulls().cloned(),
            bytes,
            path,
        })
    }

    /// The embedded bytes and stored path at row `i`.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> (Option<&[u8]>, Option<&str>) {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return (None, None);
        }
        (
            self.bytes.as_ref().and_then(|b| b.get(i)),
            self.path.as_ref().and_then(|p| p.get(i)),
        )
    }
}

/// Converts one Arrow value to JSON for printing and filtering. Binary values become
/// `{"bytes": length}`; types without a natural JSON form become their type name.
pub(crate) fn json_value(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    macro_rules! prim {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(i))
        };
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Value::from(array.as_string_view().value(i)),
        DataType::Binary => serde_json::json!({"bytes": array.as_binary::<i32>().value(i).len()}),
        DataType::LargeBinary => {
            serde_json::json!({"bytes": array.as_binary::<i64>().value(i).len()})
        }
        DataType::BinaryView => serde_json::json!({"bytes": array.as_binary_view().value(i).len()}),
        DataType::List(_) => list_json(array.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => list_json(array.as_list::<i64>().value(i).as_ref()),
        DataType::Struct(fields) => {
            let st = array.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(st.columns())
                    .map(|(f, c)| (f.name().clone(), json_value(c.as_ref(), i)))
                    .collect(),
            )
        }
        other => Value::String(format!("<{other}>")),
    }
}

fn list_json(values: &dyn Array) -> Value {
    Value::Array((0..values.len()).map(|j| json_value(values, j)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, builder::StringBuilder};
    use std::sync::Arc;

    #[test]
    fn strings_of_every_flavour_read_the_same() {
        let small: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        let large: ArrayRef = Arc::new(LargeStringArray::from(vec![Some("a"), None]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec![Some("a"), None]));
        for a in [small, large, view] {
            let c = StrColumn::new("caption", &a).unwrap();
            assert_eq!(c.get(0), Some("a"));
            assert_eq!(c.get(1), None);
        }
    }

    #[test]
    fn wrong_types_name_the_column() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let err = StrColumn::new("caption", &ints).unwrap_err().to_string();
        assert!(err.contains("`caption`") && err.contains("Int64"), "{err}");
        let mut b = StringBuilder::new();
        b.append_value("x");
        let s: ArrayRef = Arc::new(b.finish());
        let err = ImageStructColumn::new("image", &s).unwrap_err().to_string();
        assert!(err.contains("`image`") && err.contains("struct"), "{err}");
    }

    #[test]
    fn integer_ids_print_in_decimal() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(42), None]));
        let ids = IdColumn::new("id", &ints).unwrap();
        assert_eq!(ids.get(0).as_deref(), Some("42"));
        assert_eq!(ids.get(1), None);
    }
}
