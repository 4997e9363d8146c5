//! The MedTrinity-25M caption pipeline (`mt caption --pipeline medtrinity`): for each
//! sample, (1) a coarse caption from its metadata, (2) its regions of interest, (3)
//! knowledge passages retrieved with a query made from both, and (4) the captioner's
//! instruction asking for the multigranular description; the ROIs are drawn on the
//! image as green boxes, as the MedTrinity captioner saw them. Everything that went
//! into a prompt is kept in an [`Audit`] written beside the caption.

pub(crate) mod coarse;
pub(crate) mod instruction;
pub(crate) mod rois;

use anyhow::Result;
use image::{DynamicImage, RgbImage};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::core::knowledge::KnowledgeIndex;
use crate::core::roi::{Orientation, Roi, overlay};
use coarse::{Templates, coarse_caption};
use instruction::{Passage, PromptInput, is_radiological, knowledge_query, medtrinity_prompt};
use rois::{RoiTable, roi_of_bbox_field};

/// What the pipeline draws on besides the samples themselves.
pub(crate) struct Pipeline {
    pub templates: Templates,
    /// `mt roi` output joined by id; without it, the records' `bbox` fields.
    pub rois: Option<RoiTable>,
    pub knowledge: Option<KnowledgeIndex>,
    /// Passages retrieved per sample.
    pub top_k: usize,
    /// Left/right convention for boxes measured here; `None` = from the modality.
    pub orientation: Option<Orientation>,
}

/// One sample's inputs to the captioner, for the output record.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Audit {
    pub coarse_caption: String,
    pub rois: Vec<Roi>,
    /// Where the ROIs came from: `rois` (the --rois file), `bbox` (the record) or `none`.
    pub roi_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_query: Option<String>,
    /// Ids of the retrieved passages, best first.
    pub passages: Vec<String>,
    /// The instruction given to the captioner (the user turn).
    pub prompt: String,
}

/// A sample's coarse caption and regions: what its own record says.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub coarse: String,
    pub rois: Vec<Roi>,
    pub roi_source: &'static str,
}

impl Pipeline {
    /// Steps 1 and 2 for one sample: `record` holds its metadata fields, `source` its
    /// source dataset and `size` the image's width and height. Errors are the record's
    /// (a malformed `bbox`).
    pub(crate) fn case(
        &self,
        id: &str,
        record: &Map<String, Value>,
        source: &str,
        size: (usize, usize),
    ) -> Result<Case> {
        let coarse = coarse_caption(record, source, &self.templates);
        let orientation = self.orientation.unwrap_or(if is_radiological(&coarse) {
            Orientation::Radiological
        } else {
            Orientation::Anatomical
        });
        let (rois, roi_source) = match self.rois.as_ref().and_then(|t| t.get(id)) {
            Some(rois) => (rois.to_vec(), "rois"),
            None => match roi_of_bbox_field(record, size.0, size.1, orientation)? {
                Some(roi) => (vec![roi], "bbox"),
                None => (Vec::new(), "none"),
            },
        };
        Ok(Case {
            coarse,
            rois,
            roi_source,
        })
    }

    /// Steps 3 and 4: retrieval and the prompt. Errors are the index's, not the record's.
    pub(crate) fn audit(&self, case: Case) -> Result<Audit> {
        let (knowledge_query, passages) = match &self.knowledge {
            Some(index) => {
                let query = knowledge_query(&case.coarse, &case.rois);
                let hits = index.search(&query, self.top_k)?;
                let passages = hits
                    .into_iter()
                    .map(|h| Passage {
                        id: h.id,
                        title: h.title,
                        text: h.text,
                    })
                    .collect();
                (Some(query), passages)
            }
            None => (None, Vec::new()),
        };
        let prompt = medtrinity_prompt(&PromptInput {
            coarse: &case.coarse,
            rois: &case.rois,
            passages: &passages,
        });
        Ok(Audit {
            coarse_caption: case.coarse,
            rois: case.rois,
            roi_source: case.roi_source,
            knowledge_query,
            passages: passages.into_iter().map(|p| p.id).collect(),
            prompt,
        })
    }
}

/// The image with each ROI drawn as a green box (what the captioner is shown).
pub(crate) fn draw_rois(image: &DynamicImage, rois: &[Roi]) -> DynamicImage {
    if rois.is_empty() {
        return image.clone();
    }
    let mut canvas: RgbImage = image.to_rgb8();
    overlay::draw_boxes(&mut canvas, rois);
    DynamicImage::ImageRgb8(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline() -> Pipeline {
        Pipeline {
            templates: Templates::default(),
            rois: None,
            knowledge: None,
            top_k: 3,
            orientation: None,
        }
    }

    #[test]
    fn a_bbox_record_becomes_a_described_region() {
        let record = json!({"modality": "CT", "organ": "liver", "bbox": [0, 0, 10, 20]});
        let p = pipeline();
        let case = p.case("a", record.as_object().unwrap(), "", (100, 100));
        let audit = p.audit(case.unwrap()).unwrap();
        assert_eq!(audit.coarse_caption, "CT image of the liver.");
        assert_eq!(audit.roi_source, "bbox");
        // CT: radiological, so the image's left is the patient's right.
        assert_eq!(audit.rois[0].position, "right upper");
        assert!(
            audit
                .prompt
                .contains("covers about 2.0% of the image area."),
            "{}",
            audit.prompt
        );
        assert!(audit.knowledge_query.is_none() && audit.passages.is_empty());

        let histology = json!({"modality": "histopathology", "bbox": [0, 0, 10, 20]});
        let case = p.case("b", histology.as_object().unwrap(), "", (100, 100));
        assert_eq!(case.unwrap().rois[0].position, "left upper");
    }

    #[test]
    fn boxes_are_drawn_in_green() {
        let image = DynamicImage::ImageLuma8(image::GrayImage::new(20, 20));
        let roi = roi_of_bbox_field(
            json!({"bbox": [2, 2, 12, 12]}).as_object().unwrap(),
            20,
            20,
            Orientation::Anatomical,
        )
        .unwrap()
        .unwrap();
        let drawn = draw_rois(&image, &[roi]).to_rgb8();
        assert_eq!(drawn.get_pixel(2, 2).0, [0, 255, 0]);
        assert_eq!(drawn.get_pixel(7, 7).0, [0, 0, 0]);
        assert_eq!(drawn.get_pixel(15, 15).0, [0, 0, 0]);
    }
}
