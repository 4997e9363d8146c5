//! COCO JSON: boxes and polygon segmentations per image.

use super::shapes::fill_box;
use super::*;

#[derive(Deserialize)]
struct Coco {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    file_name: Value,
    #[serde(default)]
    width: Value,
    #[serde(default)]
    height: Value,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    image_id: Value,
    #[serde(default)]
    category_id: Value,
    #[serde(default)]
    bbox: Value,
    #[serde(default)]
    segmentation: Value,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: Value,
    #[serde(default)]
    name: Option<String>,
}

pub(super) fn read_coco(
    path: &Path,
    images_root: Option<&Path>,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let source = path.display().to_string();
    let parsed = File::open(path)
        .map_err(|e| anyhow!("{source}: cannot open: {e}"))
        .and_then(|f| {
            serde_json::from_reader::<_, Coco>(BufReader::with_capacity(1 << 20, f))
                .map_err(|e| anyhow!("{source}: not a COCO file: {e}"))
        });
    let coco = match parsed {
        Ok(c) => c,
        Err(e) => return visit(Item::new(stem(path), source, Err(e))),
    };
    let names: BTreeMap<u32, String> = coco
        .categories
        .iter()
        .filter_map(|c| {
            let id = u32::try_from(whole(&c.id)?).ok()?;
            Some((id, c.name.clone().unwrap_or_else(|| id.to_string())))
        })
        .collect();
    let mut by_image: HashMap<String, Vec<usize>> = HashMap::new();
    for (a, ann) in coco.annotations.iter().enumerate() {
        let key = id_text(&ann.image_id).unwrap_or_default();
        by_image.entry(key).or_default().push(a);
    }
    let folder = path.parent().unwrap_or(Path::new(""));
    let root = images_root.unwrap_or(folder);
    for (i, img) in coco.images.iter().enumerate() {
        let src = format!("{source}:images[{i}]");
        let key = id_text(&img.id);
        let anns = key
            .as_ref()
            .and_then(|k| by_image.remove(k))
            .unwrap_or_default();
        let image = img.file_name.as_str().map(|f| root.join(f));
        let regions = match &key {
            None => Err(anyhow!("{src}: field `id`: expected a string or number")),
            Some(_) => coco_regions(&coco.annotations, &anns, img, image.as_deref(), &names)
                .map_err(|e| anyhow!("{src}: {e:#}")),
        };
        let mut item = Item::new(key.unwrap_or_else(|| format!("images[{i}]")), src, regions);
        item.image = image;
        item.label_names = (!names.is_empty()).then(|| names.clone());
        visit(item)?;
    }
    if !by_image.is_empty() {
        let mut orphans: Vec<usize> = by_image.into_values().flatten().collect();
        orphans.sort_unstable();
        let first = &coco.annotations[orphans[0]];
        let msg = anyhow!(
            "{source}: {} annotation(s) refer to images not in `images` (first: annotations[{}], \
             image_id {})",
            orphans.len(),
            orphans[0],
            first.image_id
        );
        visit(Item::new(stem(path), source, Err(msg)))?;
    }
    Ok(())
}

/// One COCO image's regions from its annotations `anns` (indices into `all`).
fn coco_regions(
    all: &[CocoAnnotation],
    anns: &[usize],
    img: &CocoImage,
    image: Option<&Path>,
    names: &BTreeMap<u32, String>,
) -> Result<Regions> {
    let (width, height) = match (whole(&img.width), whole(&img.height)) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            let Some(image) = image else {
                bail!("no `width`/`height` and no `file_name` to read them from");
            };
            let info = crate::core::image::probe_file(image).map_err(|e| {
                anyhow!("no `width`/`height`, and the image cannot be read for its size: {e:#}")
            })?;
            (info.width as usize, info.height as usize)
        }
    };
    let mut rle = Vec::new();
    let mut polygons = false;
    for &a in anns {
        match &all[a].segmentation {
            Value::Object(_) => rle.push(format!("annotations[{a}] (id {})", all[a].id)),
            Value::Array(parts) if !parts.is_empty() => polygons = true,
            _ => {}
        }
    }
    if !rle.is_empty() {
        bail!(
            "RLE segmentation is not supported (polygons and boxes only): {}",
            rle.join(", ")
        );
    }
    if polygons {
        budget::picture("the polygons' label map", width as u64, height as u64, 4)?;
    }
    let mut map = polygons.then(|| LabelMap {
        width,
        height,
        labels: vec![0; width * height],
    });
    let mut boxes = Vec::new();
    for &a in anns {
        let ann = &all[a];
        let at = || format!("annotations[{a}] (id {})", ann.id);
        let category = whole(&ann.category_id)
            .and_then(|c| u32::try_from(c).ok())
            .filter(|&c| c > 0)
            .with_context(|| {
                format!(
                    "{}: field `category_id`: expected a whole number >= 1, found {}",
                    at(),
                    ann.category_id
                )
            })?;
        let bbox = match &ann.bbox {
            Value::Null => None,
            v => {
                let b = numbers(v)
                    .filter(|b| b.len() == 4 && b[2] >= 0.0 && b[3] >= 0.0)
                    .with_context(|| {
                        format!("{}: field `bbox`: expected [x, y, w, h], found {v}", at())
                    })?;
                let corners = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
                Some(pixel_box(corners, width, height).with_context(|| {
                    format!(
                        "{}: bbox {v} is empty or outside the {width}x{height} image",
                        at()
                    )
                })?)
            }
        };
        let parts = match &ann.segmentation {
            Value::Array(parts) => parts.as_slice(),
            Value::Null => &[],
            v => bail!(
                "{}: field `segmentation`: expected polygons, found {v}",
                at()
            ),
        };
        match &mut map {
            Some(map) if !parts.is_empty() => {
                for (p, part) in parts.iter().enumerate() {
                    let pts = numbers(part)
                        .filter(|pts| pts.len() >= 6 && pts.len() % 2 == 0)
                        .filter(|pts| pts.iter().all(|c| c.is_finite()))
                        .with_context(|| {
                            format!(
                                "{}: field `segmentation[{p}]`: expected a polygon \
                                 [x1, y1, x2, y2, x3, y3, ...]",
                                at()
                            )
                        })?;
                    fill_polygon(map, &pts, category);
                }
            }
            Some(map) => {
                let b = bbox.with_context(|| format!("{}: no `bbox` or `segmentation`", at()))?;
                fill_box(map, b, category);
            }
            None => {
                let b = bbox.with_context(|| format!("{}: no `bbox` or `segmentation`", at()))?;
                let label = names
                    .get(&category)
                    .cloned()
                    .unwrap_or_else(|| category.to_string());
                boxes.push((label, b));
            }
        }
    }
    Ok(match map {
        Some(map) => Regions::Mask(map),
        None => Regions::Boxes {
            width,
            height,
            boxes,
        },
    })
}
