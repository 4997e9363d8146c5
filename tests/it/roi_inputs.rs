//! `mt roi` input readers (`core::roi::inputs`): masks the tests draw at the sizes of the
//! real images in testdata/images (binary, 16-bit instance, label map, TIFF, RGB,
//! palette, low bit depth), folders, NIfTI volumes (the real binary mask in
//! testdata/medical/nifti and label volumes written here), COCO JSON and JSONL cases,
//! with exact checks of sizes, label values, boxes, areas and error messages.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use medtrinity::core::roi::inputs::*;
use medtrinity::core::roi::{LabelMap, PixelBox};
use serde_json::json;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// A real image from testdata/images and its size.
fn real(name: &str) -> (PathBuf, u32, u32) {
    let p = testdata(&format!("images/{name}"));
    let (w, h) = image::image_dimensions(&p).unwrap();
    (p, w, h)
}

fn read(paths: &[&Path], root: Option<&Path>) -> Vec<Item> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    let mut items = Vec::new();
    read_inputs(&paths, root, &mut |item| {
        items.push(item);
        Ok(())
    })
    .unwrap();
    items
}

fn one(path: &Path) -> Item {
    let mut items = read(&[path], None);
    assert_eq!(items.len(), 1, "{items:?}");
    items.pop().unwrap()
}

fn mask(item: &Item) -> &LabelMap {
    match &item.regions {
        Ok(Regions::Mask(m)) => m,
        other => panic!("{}: expected a mask, got {other:?}", item.source),
    }
}

fn err(item: &Item) -> String {
    match &item.regions {
        Err(e) => format!("{e:#}"),
        Ok(r) => panic!("{}: expected an error, got {r:?}", item.source),
    }
}

/// Pixel count per label value (background included).
fn histogram(m: &LabelMap) -> BTreeMap<u32, usize> {
    let mut h = BTreeMap::new();
    for &v in &m.labels {
        *h.entry(v).or_insert(0) += 1;
    }
    h
}

fn at(m: &LabelMap, x: usize, y: usize) -> u32 {
    m.labels[y * m.width + x]
}

fn pbox(x0: u32, y0: u32, x1: u32, y1: u32) -> PixelBox {
    PixelBox { x0, y0, x1, y1 }
}

fn fill<P: image::Pixel>(img: &mut ImageBuffer<P, Vec<P::Subpixel>>, r: [u32; 4], v: P) {
    for y in r[1]..r[3] {
        for x in r[0]..r[2] {
            img.put_pixel(x, y, v);
        }
    }
}

#[test]
fn binary_png_becomes_label_one_at_the_images_size() {
    let dir = tempfile::tempdir().unwrap();
    let (_, w, h) = real("phantom.png");
    let mut m = GrayImage::new(w, h);
    fill(&mut m, [40, 300, 60, 340], Luma([255]));
    fill(&mut m, [100, 320, 110, 330], Luma([255]));
    let p = dir.path().join("phantom_mask.png");
    m.save(&p).unwrap();
    let item = one(&p);
    assert_eq!(item.id, "phantom_mask");
    assert_eq!(item.source, p.display().to_string());
    assert!(item.image.is_none() && item.label_names.is_none());
    let lm = mask(&item);
    assert_eq!((lm.width, lm.height), (400, 400));
    assert_eq!(
        histogram(lm),
        BTreeMap::from([(0, 160_000 - 900), (1, 900)])
    );
    assert_eq!(
        (at(lm, 40, 300), at(lm, 59, 339), at(lm, 60, 339)),
        (1, 1, 0)
    );

    // 0/1 masks are label 1 as they stand.
    let mut m = GrayImage::new(w, h);
    fill(&mut m, [0, 0, 3, 2], Luma([1]));
    m.save(&p).unwrap();
    assert_eq!(histogram(mask(&one(&p)))[&1], 6);
}

#[test]
fn instance_masks_keep_one_value_per_cell() {
    let dir = tempfile::tempdir().unwrap();
    let (_, w, h) = real("cell.png");
    let mut m: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::new(w, h);
    fill(&mut m, [10, 10, 30, 25], Luma([1])); // 300 px
    fill(&mut m, [100, 400, 104, 410], Luma([2])); // 40 px
    fill(&mut m, [w - 60, h - 50, w, h], Luma([1000])); // 3000 px, touches the corner
    let png = dir.path().join("cells_masks.png");
    m.save(&png).unwrap();
    let tif = dir.path().join("cells_masks.tif");
    m.save(&tif).unwrap();
    for p in [png, tif] {
        let item = one(&p);
        let lm = mask(&item);
        assert_eq!((lm.width, lm.height), (550, 660));
        assert_eq!(
            histogram(lm),
            BTreeMap::from([(0, 550 * 660 - 3340), (1, 300), (2, 40), (1000, 3000)]),
            "{}",
            item.source
        );
        assert_eq!(at(lm, 549, 659), 1000);
    }

    // One cell at full scale of 16 bits is a binary mask.
    let mut m: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::new(w, h);
    fill(&mut m, [5, 5, 7, 7], Luma([65535]));
    let p = dir.path().join("full16.png");
    m.save(&p).unwrap();
    assert_eq!(histogram(mask(&one(&p)))[&1], 4);
}

#[test]
fn label_maps_keep_their_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, w, h) = real("ihc.png");
    let mut m = GrayImage::new(w, h);
    fill(&mut m, [0, 0, 256, 256], Luma([1]));
    fill(&mut m, [300, 300, 310, 320], Luma([2]));
    let p = dir.path().join("ihc_labels.png");
    m.save(&p).unwrap();
    assert_eq!(
        histogram(mask(&one(&p))),
        BTreeMap::from([(0, 512 * 512 - 65536 - 200), (1, 65536), (2, 200)])
    );
    // Only class 2 present: still class 2 (the binary rule is for full-scale values).
    let mut m = GrayImage::new(w, h);
    fill(&mut m, [300, 300, 310, 320], Luma([2]));
    m.save(&p).unwrap();
    assert_eq!(
        histogram(mask(&one(&p))),
        BTreeMap::from([(0, 512 * 512 - 200), (2, 200)])
    );
    // 255 beside other values is a label like any other.
    fill(&mut m, [0, 0, 1, 1], Luma([255]));
    m.save(&p).unwrap();
    assert_eq!(histogram(mask(&one(&p)))[&255], 1);
}

#[test]
fn tiff_and_rgb_masks() {
    let dir = tempfile::tempdir().unwrap();
    let (_, w, h) = real("microaneurysms.png");
    let mut m = GrayImage::new(w, h);
    fill(&mut m, [50, 60, 70, 65], Luma([255]));
    let tif = dir.path().join("ma.tiff");
    m.save(&tif).unwrap();
    let item = one(&tif);
    assert_eq!(item.id, "ma");
    let lm = mask(&item);
    assert_eq!((lm.width, lm.height), (102, 102));
    assert_eq!(
        histogram(lm),
        BTreeMap::from([(0, 102 * 102 - 100), (1, 100)])
    );

    // RGB: any colour that is not black is foreground.
    let (_, w, h) = real("retina.jpg");
    let mut m = RgbImage::new(w, h);
    fill(&mut m, [700, 700, 720, 710], Rgb([0, 255, 0]));
    fill(&mut m, [10, 10, 11, 12], Rgb([1, 0, 0]));
    let p = dir.path().join("retina_rgb.png");
    m.save(&p).unwrap();
    let lm = mask(&one(&p)).clone();
    assert_eq!((lm.width, lm.height), (1411, 1411));
    assert_eq!(
        histogram(&lm),
        BTreeMap::from([(0, 1411 * 1411 - 202), (1, 202)])
    );
    // RGBA: fully transparent pixels are background whatever their colour.
    let mut m = RgbaImage::new(20, 10);
    fill(&mut m, [0, 0, 20, 10], Rgba([255, 255, 255, 0]));
    fill(&mut m, [2, 2, 5, 4], Rgba([255, 0, 0, 255]));
    let p = dir.path().join("rgba.png");
    m.save(&p).unwrap();
    assert_eq!(
        histogram(mask(&one(&p))),
        BTreeMap::from([(0, 194), (1, 6)])
    );
}

// ---- hand-written PNGs (palette and low bit depth; the `image` crate writes neither)

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// A PNG of `rows` (unfiltered scanlines, already packed), zlib "stored" blocks.
fn png(
    w: u32,
    h: u32,
    depth: u8,
    colour: u8,
    rows: &[Vec<u8>],
    extra: &[(&[u8; 4], &[u8])],
) -> Vec<u8> {
    let mut raw = Vec::new();
    for r in rows {
        raw.push(0);
        raw.extend(r);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend(*b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, colour, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in extra {
        chunk(&mut out, kind, data);
    }
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn palette_pngs_give_their_indices() {
    let dir = tempfile::tempdir().unwrap();
    // VOC-like palette: 0 black, 1 dark red, 2 green, 3 black again (repeat), 4 white.
    let palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 0, 0, 0, 255, 255, 255];
    let rows: Vec<Vec<u8>> = (0..4)
        .map(|y| match y {
            0 => vec![0, 1, 1, 0, 0],
            1 => vec![0, 2, 2, 2, 0],
            2 => vec![4, 4, 0, 0, 0],
            _ => vec![0, 0, 0, 0, 1],
        })
        .collect();
    let p = dir.path().join("voc.png");
    fs::write(&p, png(5, 4, 8, 3, &rows, &[(b"PLTE", &palette)])).unwrap();
    let item = one(&p);
    let lm = mask(&item);
    assert_eq!((lm.width, lm.height), (5, 4));
    assert_eq!(
        lm.labels,
        vec![0, 1, 1, 0, 0, 0, 2, 2, 2, 0, 4, 4, 0, 0, 0, 0, 0, 0, 0, 1]
    );
    // Index 1 only: kept as 1; 4-bit indices packed two per byte, with transparency.
    let rows = vec![vec![0x01, 0x20], vec![0x00, 0x00]];
    let trns = [255, 128, 0];
    fs::write(
        &p,
        png(4, 2, 4, 3, &rows, &[(b"PLTE", &palette), (b"tRNS", &trns)]),
    )
    .unwrap();
    assert_eq!(mask(&one(&p)).labels, vec![0, 1, 2, 0, 0, 0, 0, 0]);
}

#[test]
fn low_bit_depth_grey_pngs_are_read_at_their_depth() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("four.png");
    // 4-bit grey, values 0, 3, 15, 9 / 0, 0, 3, 3.
    fs::write(
        &p,
        png(4, 2, 4, 0, &[vec![0x03, 0xF9], vec![0x00, 0x33]], &[]),
    )
    .unwrap();
    assert_eq!(mask(&one(&p)).labels, vec![0, 3, 15, 9, 0, 0, 3, 3]);
    // 1-bit: 0/1 (full scale of 1 bit) is label 1.
    fs::write(&p, png(8, 1, 1, 0, &[vec![0b1010_0001]], &[])).unwrap();
    assert_eq!(mask(&one(&p)).labels, vec![1, 0, 1, 0, 0, 0, 0, 1]);
    // 4-bit with only 15: binary.
    fs::write(&p, png(2, 1, 4, 0, &[vec![0xF0]], &[])).unwrap();
    assert_eq!(mask(&one(&p)).labels, vec![1, 0]);
}

#[test]
fn unreadable_masks_are_error_items_and_missing_inputs_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.png");
    fs::write(&bad, b"not a png").unwrap();
    let good = dir.path().join("good.png");
    GrayImage::from_pixel(3, 3, Luma([255]))
        .save(&good)
        .unwrap();
    let items = read(&[&bad, &good], None);
    assert_eq!(items.len(), 2);
    let e = err(&items[0]);
    assert!(
        e.starts_with(&format!("{}: not a readable image", bad.display())),
        "{e}"
    );
    assert!(!e.contains('\n'));
    assert_eq!(histogram(mask(&items[1])), BTreeMap::from([(1, 9)]));

    let missing = dir.path().join("nope.png");
    let mut seen = 0;
    let e = read_inputs(&[good.clone(), missing], None, &mut |_| {
        seen += 1;
        Ok(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("nope.png: no such file"), "{e}");
    assert_eq!(seen, 0);
    // The visitor's error stops the stream.
    let mut seen = 0;
    let e = read_inputs(&[good.clone(), good], None, &mut |_| {
        seen += 1;
        anyhow::bail!("disk full")
    })
    .unwrap_err();
    assert_eq!((e.to_string(), seen), ("disk full".to_string(), 1));
}

// ---- NIfTI

/// A NIfTI-1 single file: 348-byte header, empty extension, then the voxels.
fn nifti(
    path: &Path,
    dims: &[u16],
    datatype: i16,
    bitpix: i16,
    data: &[u8],
    slope: f32,
    inter: f32,
) {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let mut dim = [1i16; 8];
    dim[0] = dims.len() as i16;
    for (i, &d) in dims.iter().enumerate() {
        dim[i + 1] = d as i16;
    }
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for i in 0..8 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes());
    h[112..116].copy_from_slice(&slope.to_le_bytes());
    h[116..120].copy_from_slice(&inter.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend(data);
    fs::write(path, h).unwrap();
}

fn i16_bytes(v: &[i16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn real_nifti_mask_slices_line_up_with_convert_image() {
    // standard.nii.gz: 4x5x7 uint8, 0/255 -> label 1; every slice has foreground. The
    // reference PNGs are what `mt convert image` must write for it (nibabel's slices).
    let items = read(&[&testdata("medical/nifti/standard.nii.gz")], None);
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "standard#0",
            "standard#1",
            "standard#2",
            "standard#3",
            "standard#4",
            "standard#5",
            "standard#6"
        ]
    );
    for (z, item) in items.iter().enumerate() {
        assert!(item.source.ends_with(&format!("standard.nii.gz#{z}")));
        let lm = mask(item);
        assert_eq!((lm.width, lm.height), (4, 5));
        let png = image::open(testdata(&format!(
            "medical/expected/standard/standard_z{z:04}.png"
        )))
        .unwrap()
        .to_luma8();
        assert_eq!((png.width(), png.height()), (4, 5));
        let want: Vec<u32> = png.pixels().map(|p| u32::from(p.0[0] != 0)).collect();
        assert_eq!(lm.labels, want, "slice {z}");
    }
    // Slice 0 by hand (voxel (i, j, 0) at row j, column i).
    assert_eq!(
        mask(&items[0]).labels,
        vec![0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    );
}

#[test]
fn nifti_label_volumes_keep_labels_and_skip_empty_slices() {
    let dir = tempfile::tempdir().unwrap();
    // int16, 6 x 4 x 12: label 2 at voxel (1, 0, 3), label 5 over i 4..6 of row j = 3 on
    // slice 10; every other slice empty.
    let (nx, ny, nz) = (6usize, 4usize, 12usize);
    let mut v = vec![0i16; nx * ny * nz];
    v[3 * nx * ny + 1] = 2;
    for i in 4..6 {
        v[10 * nx * ny + 3 * nx + i] = 5;
    }
    let p = dir.path().join("labels.nii");
    nifti(&p, &[6, 4, 12], 4, 16, &i16_bytes(&v), 1.0, 0.0);
    let items = read(&[&p], None);
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["labels#03", "labels#10"]);
    let a = mask(&items[0]);
    assert_eq!((a.width, a.height), (6, 4));
    assert_eq!(histogram(a), BTreeMap::from([(0, 23), (2, 1)]));
    assert_eq!(at(a, 1, 0), 2);
    let b = mask(&items[1]);
    assert_eq!((at(b, 4, 3), at(b, 5, 3), at(b, 3, 3)), (5, 5, 0));

    // scl_slope 2: stored 1 is label 2.
    let mut v = vec![0i16; 8];
    v[5] = 1;
    nifti(&p, &[2, 2, 2], 4, 16, &i16_bytes(&v), 2.0, 0.0);
    let items = read(&[&p], None);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, "labels#1");
    assert_eq!(mask(&items[0]).labels, vec![0, 2, 0, 0]);

    // All empty: one (empty) item for the file's first slice.
    nifti(&p, &[2, 2, 2], 4, 16, &i16_bytes(&[0; 8]), 1.0, 0.0);
    let items = read(&[&p], None);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, "labels#0");
    assert_eq!(mask(&items[0]).labels, vec![0; 4]);

    // Float probabilities are not labels: one error item naming the voxel.
    let f: Vec<u8> = [0f32, 0.0, 0.5, 1.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    nifti(&p, &[2, 2, 1], 16, 32, &f, 1.0, 0.0);
    let items = read(&[&p], None);
    assert_eq!(items.len(), 1);
    let e = err(&items[0]);
    assert!(
        e.contains("labels.nii: voxel (0, 1, 0) is 0.5, not a label"),
        "{e}"
    );

    // uint8 0/255 is binary; 4-D volumes are `stem#t_z`.
    let mut v = vec![0u8; 2 * 2 * 2 * 2];
    v[4 + 8] = 255;
    nifti(&p, &[2, 2, 2, 2], 2, 8, &v, 0.0, 0.0);
    let items = read(&[&p], None);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, "labels#1_1");
    assert_eq!(mask(&items[0]).labels, vec![1, 0, 0, 0]);

    // Not a NIfTI file: an error item, not a stop.
    let bad = dir.path().join("bad.nii.gz");
    fs::write(&bad, b"garbage").unwrap();
    let item = one(&bad);
    assert_eq!(item.id, "bad");
    assert!(err(&item).contains("bad.nii.gz: not a readable NIfTI-1 file"));
}

#[test]
fn folders_are_walked_recursively_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("masks");
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::create_dir_all(d.join(".hidden")).unwrap();
    let m = GrayImage::from_pixel(4, 4, Luma([1]));
    m.save(d.join("b.png")).unwrap();
    m.save(d.join("a.tif")).unwrap();
    m.save(d.join("sub/c.png")).unwrap();
    m.save(d.join(".hidden/x.png")).unwrap();
    m.save(d.join("notes.bmp")).unwrap();
    fs::write(d.join("readme.txt"), "x").unwrap();
    fs::copy(
        testdata("medical/nifti/standard.nii.gz"),
        d.join("sub/seg.nii.gz"),
    )
    .unwrap();
    let items = read(&[&d], None);
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "a",
            "b",
            "sub/c",
            "sub/seg#0",
            "sub/seg#1",
            "sub/seg#2",
            "sub/seg#3",
            "sub/seg#4",
            "sub/seg#5",
            "sub/seg#6"
        ]
    );
    assert_eq!(items[2].source, d.join("sub/c.png").display().to_string());
    assert!(items.iter().all(|i| i.regions.is_ok()));

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let item = one(&empty);
    assert!(err(&item).contains("no mask files"));
}

// ---- COCO

#[test]
fn coco_boxes_and_polygons() {
    let dir = tempfile::tempdir().unwrap();
    let coco = json!({
        "images": [
            {"id": 1, "file_name": "phantom.png", "width": 400, "height": 400},
            {"id": 2, "file_name": "cell.png", "width": 550, "height": 660},
            {"id": 3, "file_name": "ihc.png", "width": 512, "height": 512},
            {"id": "four", "file_name": "microaneurysms.png", "width": 102, "height": 102},
            {"id": 5, "file_name": "retina.jpg"}
        ],
        "categories": [{"id": 1, "name": "lesion"}, {"id": 2, "name": "cell"}, {"id": 7}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10.5, 20.2, 30, 40.1]},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [390, 390, 20, 20],
             "segmentation": []},
            // Rectangle 50 x 20 = 1000 px, and the triangle (200,200) (210,200) (200,210):
            // 9 + 8 + ... + 1 = 45 pixel centres inside.
            {"id": 20, "image_id": 2, "category_id": 1,
             "segmentation": [[100, 100, 150, 100, 150, 120, 100, 120]],
             "bbox": [100, 100, 50, 20]},
            {"id": 21, "image_id": 2, "category_id": 2,
             "segmentation": [[200, 200, 210, 200, 200, 210]]},
            {"id": 22, "image_id": 2, "category_id": 7, "bbox": [0, 0, 2.5, 2]},
            {"id": 40, "image_id": "four", "category_id": 1,
             "segmentation": {"counts": [0, 5, 97], "size": [102, 102]}, "iscrowd": 1},
            {"id": 50, "image_id": 5, "category_id": 2, "bbox": [0, 0, 1, 1]},
            {"id": 99, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]}
        ]
    });
    let p = dir.path().join("coco.json");
    fs::write(&p, serde_json::to_vec(&coco).unwrap()).unwrap();
    let root = testdata("images");
    let items = read(&[&p], Some(&root));
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "four", "5", "coco"]);
    let names = BTreeMap::from([
        (1, "lesion".to_string()),
        (2, "cell".to_string()),
        (7, "7".to_string()),
    ]);
    assert_eq!(items[0].label_names.as_ref(), Some(&names));
    assert_eq!(
        items[0].image.as_deref(),
        Some(root.join("phantom.png").as_path())
    );
    assert_eq!(items[0].source, format!("{}:images[0]", p.display()));

    // Boxes only: floor(x), floor(y), ceil(x + w), ceil(y + h), clamped.
    match &items[0].regions {
        Ok(Regions::Boxes {
            width,
            height,
            boxes,
        }) => {
            assert_eq!((*width, *height), (400, 400));
            assert_eq!(
                boxes,
                &vec![
                    ("lesion".to_string(), pbox(10, 20, 41, 61)),
                    ("7".to_string(), pbox(390, 390, 400, 400)),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // Polygons rasterised at pixel centres; a box-only annotation is painted as a box.
    let lm = mask(&items[1]);
    assert_eq!((lm.width, lm.height), (550, 660));
    assert_eq!(
        histogram(lm),
        BTreeMap::from([(0, 550 * 660 - 1000 - 45 - 6), (1, 1000), (2, 45), (7, 6)])
    );
    assert_eq!(
        (at(lm, 100, 100), at(lm, 149, 119), at(lm, 150, 119)),
        (1, 1, 0)
    );
    assert_eq!(
        (at(lm, 200, 200), at(lm, 208, 200), at(lm, 209, 200)),
        (2, 2, 0)
    );
    // No annotations: no boxes.
    assert!(matches!(
        &items[2].regions,
        Ok(Regions::Boxes { width: 512, height: 512, boxes }) if boxes.is_empty()
    ));
    // RLE: an error naming the annotation.
    let e = err(&items[3]);
    assert!(
        e.contains("coco.json:images[3]: RLE segmentation is not supported"),
        "{e}"
    );
    assert!(e.contains("annotations[5] (id 40)"), "{e}");
    // No width/height: read from the image's header.
    assert!(matches!(
        &items[4].regions,
        Ok(Regions::Boxes {
            width: 1411,
            height: 1411,
            ..
        })
    ));
    // Annotations of unknown images.
    let e = err(&items[5]);
    assert!(
        e.contains("1 annotation(s) refer to images not in `images`"),
        "{e}"
    );
    assert!(e.contains("annotations[7], image_id 42"), "{e}");

    // Without --images, file names resolve against the JSON's folder.
    let items = read(&[&p], None);
    assert_eq!(
        items[0].image.as_deref(),
        Some(dir.path().join("phantom.png").as_path())
    );
    assert!(err(&items[4]).contains("cannot be read for its size"));
}

#[test]
fn coco_errors_name_the_annotation_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    let coco = json!({
        "images": [
            {"id": 1, "width": 10, "height": 10},
            {"id": 2, "width": 10, "height": 10},
            {"id": 3, "width": 10, "height": 10},
            {"id": 4, "width": 10, "height": 10}
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
            {"id": 2, "image_id": 2, "category_id": 1, "segmentation": [[1, 2, 3, 4]]},
            {"id": 3, "image_id": 3, "bbox": [1, 1, 1, 1]},
            {"id": 4, "image_id": 4, "category_id": 1, "bbox": [20, 20, 5, 5]}
        ]
    });
    fs::write(&p, serde_json::to_vec(&coco).unwrap()).unwrap();
    let items = read(&[&p], None);
    let errors: Vec<String> = items.iter().map(err).collect();
    assert!(
        errors[0].contains("annotations[0] (id 1): field `bbox`: expected [x, y, w, h]"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("annotations[1] (id 2): field `segmentation[0]`: expected a polygon"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("annotations[2] (id 3): field `category_id`"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].contains("is empty or outside the 10x10 image"),
        "{}",
        errors[3]
    );
    assert!(items.iter().all(|i| i.label_names.is_none()));

    fs::write(&p, "{\"annotations\": []}").unwrap();
    let item = one(&p);
    assert_eq!(item.id, "bad");
    assert!(
        err(&item).contains("bad.json: not a COCO file"),
        "{}",
        err(&item)
    );
}

// ---- JSONL

#[test]
fn jsonl_cases_with_masks_boxes_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (ma, w, h) = real("microaneurysms.png");
    let (ihc, _, _) = real("ihc.png");
    let mut m = GrayImage::new(w, h);
    fill(&mut m, [10, 20, 15, 30], Luma([255]));
    fs::create_dir(dir.path().join("masks")).unwrap();
    m.save(dir.path().join("masks/ma.png")).unwrap();
    GrayImage::new(100, 100)
        .save(dir.path().join("masks/small.png"))
        .unwrap();
    let mut labels = GrayImage::new(w, h);
    fill(&mut labels, [0, 0, 2, 2], Luma([1]));
    fill(&mut labels, [5, 5, 6, 6], Luma([2]));
    labels.save(dir.path().join("masks/two.png")).unwrap();

    let lines = [
        json!({"id": "case1", "image": ma, "mask": "masks/ma.png", "label": "microaneurysm"}),
        json!({"id": 2, "image": "ihc.png", "bbox": [10.2, 20.7, 30.5, 40], "label": "tumour"}),
        json!(""),
        json!("{oops"),
        json!({"id": "mismatch", "image": ma, "mask": "masks/small.png"}),
        json!({"image": [ihc], "bbox": [[0, 0, 10, 10], [500, 500, 600, 600]],
               "labels": ["a", "b"]}),
        json!({"id": "nomask", "mask": "masks/missing.png"}),
        json!({"id": "nosize", "bbox": [0, 0, 5, 5]}),
        json!({"id": "sized", "bbox": [0, 0, 5, 5], "width": 64, "height": 32}),
        json!({"id": "two", "mask": "masks/two.png", "labels": {"1": "liver", "2": "tumour"}}),
        json!({"id": "reversed", "bbox": [5, 5, 0, 0], "width": 8, "height": 8}),
        json!({"id": "fewer", "bbox": [[0, 0, 1, 1]], "labels": ["a", "b"],
               "width": 8, "height": 8}),
        json!({"id": "neither", "image": ma}),
    ]
    .map(|v| match v {
        // Strings stand for raw lines (blank, broken JSON).
        serde_json::Value::String(raw) => raw,
        v => v.to_string(),
    });
    let p = dir.path().join("cases.jsonl");
    fs::write(&p, lines.join("\n") + "\n").unwrap();
    let root = testdata("images");
    let items = read(&[&p], Some(&root));
    let src = |n: usize| format!("{}:{n}", p.display());
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let want_ids = [
        "case1".to_string(),
        "2".to_string(),
        src(4),
        "mismatch".to_string(),
        "ihc".to_string(),
        "nomask".to_string(),
        "nosize".to_string(),
        "sized".to_string(),
        "two".to_string(),
        "reversed".to_string(),
        "fewer".to_string(),
        "neither".to_string(),
    ];
    assert_eq!(ids, want_ids.iter().map(String::as_str).collect::<Vec<_>>());
    let sources: Vec<&str> = items.iter().map(|i| i.source.as_str()).collect();
    let want_sources: Vec<String> = [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13].map(src).to_vec();
    assert_eq!(
        sources,
        want_sources.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // 1: mask beside its image, binary 255 -> 1, `label` names label 1.
    let lm = mask(&items[0]);
    assert_eq!((lm.width, lm.height), (102, 102));
    assert_eq!(histogram(lm)[&1], 50);
    assert_eq!(items[0].image.as_deref(), Some(ma.as_path()));
    assert_eq!(
        items[0].label_names,
        Some(BTreeMap::from([(1, "microaneurysm".to_string())]))
    );
    // 2: a box on ihc.png (resolved against --images), size from its header.
    assert_eq!(
        items[1].image.as_deref(),
        Some(root.join("ihc.png").as_path())
    );
    match &items[1].regions {
        Ok(Regions::Boxes {
            width,
            height,
            boxes,
        }) => {
            assert_eq!((*width, *height), (512, 512));
            assert_eq!(boxes, &vec![("tumour".to_string(), pbox(10, 20, 31, 40))]);
        }
        other => panic!("{other:?}"),
    }
    // 4: invalid JSON.
    let e = err(&items[2]);
    assert!(
        e.starts_with(&format!("{}: line 4: invalid JSON", p.display())),
        "{e}"
    );
    // 5: size mismatch.
    let e = err(&items[3]);
    assert!(e.contains("line 5: mask 100x100 but image 102x102"), "{e}");
    // 6: a list of boxes with a name each; the second clamped to the image.
    match &items[4].regions {
        Ok(Regions::Boxes { boxes, .. }) => assert_eq!(
            boxes,
            &vec![
                ("a".to_string(), pbox(0, 0, 10, 10)),
                ("b".to_string(), pbox(500, 500, 512, 512)),
            ]
        ),
        other => panic!("{other:?}"),
    }
    // 7: missing mask file.
    let e = err(&items[5]);
    assert!(
        e.contains("line 7: ") && e.contains("missing.png: cannot read"),
        "{e}"
    );
    // 8: a box without any size.
    assert!(err(&items[6]).contains("line 8: field `bbox`: needs `image`"));
    // 9: size from width/height; default label 1.
    let sized = vec![("1".to_string(), pbox(0, 0, 5, 5))];
    assert!(matches!(
        &items[7].regions,
        Ok(Regions::Boxes { width: 64, height: 32, boxes }) if boxes == &sized
    ));
    // 10: a label map with named labels.
    assert_eq!(
        histogram(mask(&items[8])),
        BTreeMap::from([(0, 102 * 102 - 5), (1, 4), (2, 1)])
    );
    assert_eq!(
        items[8].label_names,
        Some(BTreeMap::from([
            (1, "liver".to_string()),
            (2, "tumour".to_string())
        ]))
    );
    assert!(
        err(&items[9]).contains("line 11: field `bbox`: box 0 [5.0, 5.0, 0.0, 0.0] has x1 < x0")
    );
    assert!(err(&items[10]).contains("line 12: field `labels`: expected a list of 1 name(s)"));
    assert!(err(&items[11]).contains("line 13: no `mask` or `bbox`"));
    assert!(items.iter().all(|i| match &i.regions {
        Err(e) => !format!("{e:#}").contains('\n'),
        Ok(_) => true,
    }));
}

// ---- Memory budgets

#[test]
fn sizes_claimed_beyond_the_memory_budget_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // 65535^7 voxels at bitpix 0: the NIfTI reader's own size check sees 0 bytes to read,
    // and multiplying the dims would overflow.
    let overflow = dir.path().join("overflow.nii");
    nifti(&overflow, &[65535; 7], 2, 0, &[], 1.0, 0.0);
    // 4096 x 4096 x 1024 uint8 (16 GiB) claimed by a file of a few bytes.
    let huge = dir.path().join("huge.nii");
    nifti(&huge, &[4096, 4096, 1024], 2, 8, &[1, 2, 3], 1.0, 0.0);
    for (path, dims) in [
        (
            &overflow,
            "[65535, 65535, 65535, 65535, 65535, 65535, 65535]",
        ),
        (&huge, "[4096, 4096, 1024]"),
    ] {
        let e = err(&one(path));
        let want = format!("{}: the voxels of dim {dims} would take", path.display());
        assert!(e.starts_with(&want) && e.contains("budget"), "{e}");
    }
    // COCO polygons are drawn into a label map of the JSON's own width x height.
    let coco = dir.path().join("big.json");
    let doc = json!({
        "images": [
            {"id": 1, "width": 200000, "height": 200000},
            {"id": 2, "width": 10, "height": 10}
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"id": 2, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}
        ],
        "categories": [{"id": 1, "name": "lesion"}]
    });
    fs::write(&coco, serde_json::to_vec(&doc).unwrap()).unwrap();
    let items = read(&[&coco], None);
    assert_eq!(items.len(), 2);
    let e = err(&items[0]);
    assert!(
        e.contains("the polygons' label map (200000x200000) would take 149 GiB"),
        "{e}"
    );
    assert_eq!(mask(&items[1]).labels.len(), 100);
}
