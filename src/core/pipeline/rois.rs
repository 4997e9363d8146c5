//! Step 2 of the MedTrinity pipeline: the regions of interest of each sample, joined by
//! id from `mt roi` output, or taken from the record's own `bbox` field.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::core::data::id_text;
use crate::core::records::for_each_record;
use crate::core::roi::measure::measure_box;
use crate::core::roi::{Orientation, PixelBox, Roi};

/// The ROIs of `mt roi` output, by id.
#[derive(Debug, Default)]
pub(crate) struct RoiTable {
    by_id: HashMap<String, Vec<Roi>>,
}

/// One line of `mt roi` output (other fields ignored).
#[derive(Deserialize)]
struct Line {
    id: Value,
    #[serde(default)]
    rois: Vec<Roi>,
}

impl RoiTable {
    /// Reads `mt roi` output (JSONL or parquet), keeping the ids `keep` accepts (a
    /// shard's own ids; the table is held in memory, about 200 bytes per ROI). A record
    /// that is not an `mt roi` record, or an id given twice, fails with its position.
    pub(crate) fn load(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Self> {
        let mut by_id = HashMap::new();
        for_each_record(path, &mut |at, value| {
            let record: Line = serde_json::from_value(value).with_context(|| {
                format!("{at}: not an `mt roi` record ({{id, rois: [{{label, bbox, area_pct, position, ...}}]}})")
            })?;
            let Some(id) = id_text(&record.id) else {
                bail!("{at}: `id` must be a string or number");
            };
            if keep(&id) && by_id.insert(id.clone(), record.rois).is_some() {
                bail!("{at}: id `{id}` given twice");
            }
            Ok(())
        })?;
        Ok(Self { by_id })
    }

    /// The ROIs listed for `id` (`None`: the id is not in the table).
    pub(crate) fn get(&self, id: &str) -> Option<&[Roi]> {
        self.by_id.get(id).map(Vec::as_slice)
    }

    /// Ids in the table.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The ROI of a record's `bbox` field (`[x0, y0, x1, y1]` in pixels, as the
/// MedTrinity-25M `25M_full` manifests carry it) measured on a `width x height` image.
/// `Ok(None)` when there is no `bbox`; an error when it is not four numbers.
pub(crate) fn roi_of_bbox_field(
    record: &Map<String, Value>,
    width: usize,
    height: usize,
    orientation: Orientation,
) -> Result<Option<Roi>> {
    let Some(value) = record.get("bbox").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let corners: Vec<f64> = value
        .as_array()
        .and_then(|a| a.iter().map(Value::as_f64).collect())
        .unwrap_or_default();
    let [x0, y0, x1, y1] = corners[..] else {
        bail!("field `bbox`: expected [x0, y0, x1, y1] in pixels, got {value}");
    };
    if [x0, y0, x1, y1].iter().any(|v| !v.is_finite() || *v < 0.0) || x1 < x0 || y1 < y0 {
        bail!("field `bbox`: {value} is not a box (x0 <= x1, y0 <= y1, all >= 0)");
    }
    let b = PixelBox {
        x0: x0.floor() as u32,
        y0: y0.floor() as u32,
        x1: x1.ceil() as u32,
        y1: y1.ceil() as u32,
    };
    let label = record
        .get("bbox_label")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(Some(measure_box(b, label, width, height, orientation)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roi_lines_join_by_id_and_shards_keep_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rois.jsonl");
        let roi = json!({"label": "1", "bbox": [0, 0, 2, 2], "bbox_norm": [0.0, 0.0, 0.5, 0.5],
            "area": 4, "area_pct": 25.0, "centroid": [1.0, 1.0], "components": 1, "position": "right upper"});
        let lines = [
            json!({"id": "a", "width": 4, "height": 4, "rois": [roi]}),
            json!({"id": 7, "rois": []}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n\n")).collect();
        std::fs::write(&path, text).unwrap();
        let table = RoiTable::load(&path, &|_| true).unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(table.get("a").unwrap()[0].position, "right upper");
        assert_eq!(table.get("7"), Some(&[][..]));
        assert_eq!(table.get("b"), None);
        let only_a = RoiTable::load(&path, &|id| id == "a").unwrap();
        assert_eq!(only_a.len(), 1);

        std::fs::write(&path, "{\"id\": \"a\", \"rois\": [{\"label\": 1}]}\n").unwrap();
        let err = format!("{:#}", RoiTable::load(&path, &|_| true).unwrap_err());
        assert!(
            err.contains("rois.jsonl:1: not an `mt roi` record"),
            "{err}"
        );
    }

    #[test]
    fn bbox_fields_are_measured_and_checked() {
        let record = |v: Value| v.as_object().cloned().unwrap();
        let r = roi_of_bbox_field(
            &record(json!({"bbox": [0, 0, 10, 10]})),
            100,
            100,
            Orientation::Anatomical,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.area, r.area_pct, r.position.as_str()),
            (100, 1.0, "left upper")
        );
        let none = roi_of_bbox_field(&record(json!({"x": 1})), 10, 10, Orientation::Anatomical);
        assert!(none.unwrap().is_none());
        for bad in [
            json!({"bbox": [1, 2, 3]}),
            json!({"bbox": [5, 0, 1, 1]}),
            json!({"bbox": "x"}),
            json!({"bbox": [0, "x", 1, 2, 3]}),
        ] {
            let err = roi_of_bbox_field(&record(bad), 10, 10, Orientation::Anatomical).unwrap_err();
            assert!(err.to_string().starts_with("field `bbox`"), "{err}");
        }
    }
}
