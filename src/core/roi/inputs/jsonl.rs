//! JSONL cases: `{id, image, mask | bbox, label | labels}` per line.

use super::*;

pub(super) fn read_jsonl(
    path: &Path,
    images_root: Option<&Path>,
    visit: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let source = path.display().to_string();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let msg = anyhow!("{source}: cannot open: {e}");
            return visit(Item::new(stem(path), source, Err(msg)));
        }
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let roots = Roots {
        masks: folder,
        images: images_root.unwrap_or(folder),
    };
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let at = format!("{source}:{}", n + 1);
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let msg = anyhow!("{source}: line {}: cannot read: {e}", n + 1);
                return visit(Item::new(at.clone(), at, Err(msg)));
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let item = jsonl_item(&line, n + 1, &roots)
            .unwrap_or_else(|e| Item::new(at.clone(), at.clone(), Err(e)));
        let item = Item {
            source: at,
            regions: item
                .regions
                .map_err(|e| anyhow!("{source}: line {}: {e:#}", n + 1)),
            ..item
        };
        visit(item)?;
    }
    Ok(())
}

struct Roots<'a> {
    masks: &'a Path,
    images: &'a Path,
}

/// One JSONL line as an item; `Err` when even the id cannot be had (invalid JSON).
fn jsonl_item(line: &str, number: usize, roots: &Roots<'_>) -> Result<Item> {
    let value: Value = serde_json::from_str(line).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        bail!("expected a JSON object");
    };
    let image = match obj.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(roots.images.join(s)),
        Some(Value::Array(list)) => list
            .first()
            .and_then(Value::as_str)
            .map(|s| roots.images.join(s)),
        Some(_) => None,
    };
    let mask = obj
        .get("mask")
        .and_then(Value::as_str)
        .map(|m| roots.masks.join(m));
    let id = match obj.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_))) => id_text(v).unwrap_or_default(),
        _ => image
            .as_deref()
            .or(mask.as_deref())
            .map(stem)
            .unwrap_or_else(|| format!("line {number}")),
    };
    let (regions, label_names) = match jsonl_regions(&obj, image.as_deref(), mask.as_deref()) {
        Ok((regions, names)) => (Ok(regions), names),
        Err(e) => (Err(e), None),
    };
    Ok(Item {
        id,
        image,
        source: String::new(),
        regions,
        label_names,
    })
}

type Named = (Regions, Option<BTreeMap<u32, String>>);

fn jsonl_regions(
    obj: &serde_json::Map<String, Value>,
    image: Option<&Path>,
    mask: Option<&Path>,
) -> Result<Named> {
    match obj.get("image") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(Value::Array(l)) if l.first().is_some_and(Value::is_string) => {}
        Some(v) => bail!("field `image`: expected a path, found {v}"),
    }
    if let Some(v) = obj.get("id")
        && !matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
    {
        bail!("field `id`: expected a string or number, found {v}");
    }
    let image_size = |image: &Path| -> Result<(usize, usize)> {
        let info = crate::core::image::probe_file(image)
            .map_err(|e| anyhow!("cannot read the image's size: {e:#}"))?;
        Ok((info.width as usize, info.height as usize))
    };
    let label =
        match obj.get("label") {
            None | Some(Value::Null) => None,
            Some(v) => Some(id_text(v).with_context(|| {
                format!("field `label`: expected a string or number, found {v}")
            })?),
        };
    let labels = obj.get("labels").filter(|v| !v.is_null());
    if let Some(m) = obj.get("mask").filter(|v| !v.is_null()) {
        let Some(mask) = mask else {
            bail!("field `mask`: expected a path, found {m}");
        };
        if kind_of(mask) == Kind::Nifti {
            bail!(
                "field `mask`: {} is a NIfTI volume; pass it to `mt roi` directly",
                mask.display()
            );
        }
        let map = read_mask_image(mask)?;
        if let Some(image) = image {
            let (w, h) = image_size(image)?;
            if (w, h) != (map.width, map.height) {
                bail!(
                    "mask {}x{} but image {w}x{h} ({} vs {})",
                    map.width,
                    map.height,
                    mask.display(),
                    image.display()
                );
            }
        }
        let mut names = BTreeMap::new();
        if let Some(l) = label {
            names.insert(1, l);
        }
        match labels {
            None => {}
            Some(Value::Object(o)) => {
                for (k, v) in o {
                    let key = k.parse::<u32>().ok().filter(|&k| k > 0);
                    let name = id_text(v);
                    let (Some(key), Some(name)) = (key, name) else {
                        bail!(
                            "field `labels`: expected {{\"1\": \"name\", ...}}, found {k:?}: {v}"
                        );
                    };
                    names.insert(key, name);
                }
            }
            Some(Value::Array(list)) => {
                for (i, v) in list.iter().enumerate() {
                    let name = id_text(v).with_context(|| {
                        format!("field `labels[{i}]`: expected a string or number, found {v}")
                    })?;
                    names.insert(i as u32 + 1, name);
                }
            }
            Some(v) => bail!("field `labels`: expected an object or a list, found {v}"),
        }
        return Ok((Regions::Mask(map), (!names.is_empty()).then_some(names)));
    }
    let Some(bbox) = obj.get("bbox").filter(|v| !v.is_null()) else {
        bail!("no `mask` or `bbox`");
    };
    let corners: Vec<[f64; 4]> = match numbers(bbox) {
        Some(b) if b.len() == 4 => vec![[b[0], b[1], b[2], b[3]]],
        _ => bbox
            .as_array()
            .filter(|l| !l.is_empty())
            .and_then(|l| {
                l.iter()
                    .map(|b| {
                        numbers(b)
                            .filter(|b| b.len() == 4)
                            .map(|b| [b[0], b[1], b[2], b[3]])
                    })
                    .collect()
            })
            .with_context(|| {
                format!("field `bbox`: expected [x0, y0, x1, y1] or a list of them, found {bbox}")
            })?,
    };
    let given = match (obj.get("width"), obj.get("height")) {
        (None, None) => None,
        (Some(w), Some(h)) => match (whole(w), whole(h)) {
            (Some(w), Some(h)) if w > 0 && h > 0 => Some((w, h)),
            _ => bail!("fields `width`, `height`: expected whole numbers >= 1"),
        },
        _ => bail!("fields `width`, `height`: give both or neither"),
    };
    let (width, height) = match (image, given) {
        (Some(image), given) => {
            let (w, h) = image_size(image)?;
            if let Some((gw, gh)) = given
                && (gw, gh) != (w, h)
            {
                bail!(
                    "`width`/`height` say {gw}x{gh} but image {w}x{h} ({})",
                    image.display()
                );
            }
            (w, h)
        }
        (None, Some(size)) => size,
        (None, None) => {
            bail!("field `bbox`: needs `image` (or `width` and `height`) for the image size")
        }
    };
    let names: Vec<String> = match labels {
        None => vec![label.unwrap_or_else(|| "1".to_string()); corners.len()],
        Some(Value::Array(list)) if list.len() == corners.len() => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                id_text(v).with_context(|| {
                    format!("field `labels[{i}]`: expected a string or number, found {v}")
                })
            })
            .collect::<Result<_>>()?,
        Some(v) => bail!(
            "field `labels`: expected a list of {} name(s), one per box, found {v}",
            corners.len()
        ),
    };
    let mut boxes = Vec::with_capacity(corners.len());
    for (i, (c, name)) in corners.iter().zip(names).enumerate() {
        if c[2] < c[0] || c[3] < c[1] {
            bail!("field `bbox`: box {i} {c:?} has x1 < x0 or y1 < y0 (expected [x0, y0, x1, y1])");
        }
        let b = pixel_box(*c, width, height).with_context(|| {
            format!("field `bbox`: box {i} {c:?} is empty or outside the {width}x{height} image")
        })?;
        boxes.push((name, b));
    }
    Ok((
        Regions::Boxes {
            width,
            height,
            boxes,
        },
        None,
    ))
}
