#!/usr/bin/env python3
"""Builds the bundled sample datasets under testdata/ from the real images in
../shared/data (see testdata/README.md for provenance). Run by hand, not by CI:

    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install numpy pillow pyarrow pydicom zstandard
    /tmp/fx/bin/python testdata/make_fixtures.py ../shared/data

Outputs are deterministic for a given set of library versions.
"""
import io
import json
import random
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import zstandard
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent.parent / "shared" / "data")
rng = random.Random(25)

# (file, modality phrase, organ, tissue, source dataset name)
SOURCES = [
    ("images/phantom.png", "computed tomography (CT) scan", "head", "brain parenchyma", "shepp-logan"),
    ("dicom/CT_small.dcm", "computed tomography (CT) scan", "chest", "lung tissue", "nema-ct"),
    ("dicom/liver_1frame.dcm", "liver segmentation mask from a CT scan", "abdomen", "hepatic parenchyma", "tcia-liver"),
    ("dicom/MR_small.dcm", "T2-weighted magnetic resonance imaging (MRI) scan", "brain", "white matter", "nema-mr"),
    ("images/retina.jpg", "fundus photograph", "retina", "retinal background", "hrf-fundus"),
    ("images/microaneurysms.png", "fundus photograph", "retina", "surrounding retina", "hrf-fundus"),
    ("images/ihc.png", "histopathology image (immunohistochemistry stain)", "colon tissue", "stroma", "ihc-tissue"),
    ("images/cell.png", "phase-contrast microscopy image", "cell", "background medium", "qpi-cells"),
]
TEXTURES = ["hypodense with a heterogeneous texture", "hyperintense and homogeneous", "darker and granular",
            "brighter with irregular, mottled texture", "densely stained with a coarse texture",
            "smooth with slightly increased intensity"]
RELATIONS = ["it is adjacent to the surrounding {t}, which may suggest local compression",
             "compared to the surrounding {t}, it shows a clear border, suggesting a well-defined lesion",
             "it abuts the neighbouring {t} without obvious invasion",
             "it extends towards the nearby {t}, which could indicate infiltration"]


def load(rel):
    path = SHARED / rel
    if path.suffix == ".dcm":
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float64)
        arr -= arr.min()
        if rel.endswith("MR_small.dcm") or rel.endswith("CT_small.dcm"):
            # Keep 16 bits: real CT/MR PNG exports are often 16-bit greyscale.
            return Image.fromarray((arr / max(arr.max(), 1) * 4095).astype(np.uint16))
        # liver_1frame.dcm is a DICOM SEG frame: a 0/1 mask, stored as 0/255.
        return Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
    return Image.open(path)


def variants(img, n):
    """n crops/resizes of img at different sizes and aspects."""
    w, h = img.size
    out = []
    for k in range(n):
        if k == 0:
            v = img
        else:
            cw, ch = int(w * rng.uniform(0.5, 0.95)), int(h * rng.uniform(0.5, 0.95))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            v = img.crop((x, y, x + cw, y + ch))
        side = rng.choice([96, 128, 224, 256, 336, 400])
        scale = side / max(v.size)
        if scale < 1:
            v = v.resize((max(1, round(v.size[0] * scale)), max(1, round(v.size[1] * scale))), Image.BICUBIC)
        out.append(v)
    return out


def position(cx, cy):
    col = ["left", "center", "right"][min(2, int(cx * 3))]
    row = ["upper", "middle", "lower"][min(2, int(cy * 3))]
    return "center" if (row, col) == ("middle", "center") else f"{row} {col}" if row != "middle" else f"{col}-center"


def caption(modality, organ, tissue, w, h):
    bw, bh = rng.randint(max(2, w // 10), max(3, w // 3)), rng.randint(max(2, h // 10), max(3, h // 3))
    x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
    area = 100.0 * bw * bh / (w * h)
    pos = position((x0 + bw / 2) / w, (y0 + bh / 2) / h)
    text = (f"The image is a {modality} of the {organ}, showing the {tissue} in detail. "
            f"The region of interest is located in the {pos} of the image, occupying approximately "
            f"{area:.1f}% of the total area. The lesion appears {rng.choice(TEXTURES)}, and "
            f"{rng.choice(RELATIONS).format(t=tissue)}.")
    return text, [x0, y0, x0 + bw, y0 + bh]


def encode(img, fmt):
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.convert("RGB" if img.mode in ("RGB", "RGBA", "P") else "L").save(buf, "JPEG", quality=85)
    else:
        img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def records(per_source):
    out = []
    for rel, modality, organ, tissue, source in SOURCES:
        img = load(rel)
        for v in variants(img, per_source):
            fmt = "jpeg" if (v.mode == "RGB" and rng.random() < 0.7) or (v.mode == "L" and rng.random() < 0.3) else "png"
            data = encode(v, fmt)
            text, box = caption(modality, organ, tissue, *v.size)
            out.append(dict(bytes=data, ext="jpg" if fmt == "jpeg" else "png", caption=text, source=source,
                            modality=modality.split(" (")[0], bbox=box))
    return out


def uuid_like(k):
    h = rng.getrandbits(128)
    s = f"{h:032x}"
    return f"{s[:8]}-{s[8:12]}-11ef-{s[16:20]}-{s[20:32]}"


HF_DEMO = {"info": {"features": {
    "image": {"_type": "Image"},
    "id": {"dtype": "string", "_type": "Value"},
    "caption": {"dtype": "string", "_type": "Value"}}}}


def nearest_rank(values, q):
    v = sorted(values)
    k = max(1, min(len(v), -(-int(q * len(v) * 1000000) // 1000000)))
    return v[k - 1]


def expected(recs, ids, sources):
    """Reference statistics computed independently of mt, for the integration tests."""
    chars = [len(r["caption"]) for r in recs]
    words = [len(r["caption"].split()) for r in recs]
    sizes = [Image.open(io.BytesIO(r["bytes"])).size for r in recs]
    digests = {}
    for r in recs:
        digests[r["bytes"]] = digests.get(r["bytes"], 0) + 1
    formats = {}
    for r in recs:
        f = "jpeg" if r["ext"] == "jpg" else "png"
        formats[f] = formats.get(f, 0) + 1
    return {
        "rows": len(recs),
        "distinct_ids": len(set(ids)),
        "chars": {"min": min(chars), "max": max(chars), "median": nearest_rank(chars, 0.5), "sum": sum(chars)},
        "words": {"min": min(words), "max": max(words), "median": nearest_rank(words, 0.5), "sum": sum(words)},
        "width": {"min": min(s[0] for s in sizes), "max": max(s[0] for s in sizes)},
        "height": {"min": min(s[1] for s in sizes), "max": max(s[1] for s in sizes)},
        "formats": formats,
        "duplicate_groups": sum(1 for c in digests.values() if c > 1),
        "fundus_captions": sum("fundus" in r["caption"].lower() for r in recs),
        "sources": {s: sources.count(s) for s in sorted(set(sources))} if sources else {},
        "image_bytes": sum(len(r["bytes"]) for r in recs),
    }


def write_demo(recs):
    root = HERE / "medtrinity-demo" / "25M_demo"
    root.mkdir(parents=True, exist_ok=True)
    # One exact duplicate image under a second id, as real crawls have.
    recs = recs + [dict(recs[3])]
    rows = [dict(image={"bytes": r["bytes"], "path": f"{i:06d}.{r['ext']}"}, id=uuid_like(i), caption=r["caption"])
            for i, r in enumerate(recs)]
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("id", pa.string()), ("caption", pa.string())],
                       metadata={"huggingface": json.dumps(HF_DEMO)})
    half = (len(rows) + 1) // 2
    for k, part in enumerate([rows[:half], rows[half:]]):
        table = pa.Table.from_pylist(part, schema=schema)
        pq.write_table(table, root / f"train-{k:05d}-of-00002.parquet", row_group_size=6)
    exp = expected(recs, [r["id"] for r in rows], [])
    (root.parent / "expected.json").write_text(json.dumps(exp, indent=1) + "\n")


def write_full(recs):
    root = HERE / "medtrinity-full"
    (root / "25M_full").mkdir(parents=True, exist_ok=True)
    (root / "25M_accessible").mkdir(parents=True, exist_ok=True)
    names = [f"{r['source']}_{i:05d}.{r['ext']}" for i, r in enumerate(recs)]
    table = pa.table({
        "file_name": names,
        "caption": [r["caption"] for r in recs],
        "source": [r["source"] for r in recs],
        "modality": [r["modality"] for r in recs],
        "bbox": [r["bbox"] for r in recs],
    })
    pq.write_table(table, root / "25M_full" / "train-00000-of-00001.parquet", row_group_size=10)
    half = (len(recs) + 1) // 2
    for k, part in enumerate([range(0, half), range(half, len(recs))]):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for i in part:
                info = tarfile.TarInfo(names[i])
                info.size = len(recs[i]["bytes"])
                info.mtime = 1_720_000_000
                tar.addfile(info, io.BytesIO(recs[i]["bytes"]))
        (root / "25M_accessible" / f"images_{k:03d}.tar.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(raw.getvalue()))
    exp = expected(recs, names, [r["source"] for r in recs])
    (root / "expected.json").write_text(json.dumps(exp, indent=1) + "\n")


def write_llava(recs):
    root = HERE / "llava"
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, r in enumerate(recs):
        name = f"{r['source']}_{i:03d}.{r['ext']}"
        (root / "images" / name).write_bytes(r["bytes"])
        entries.append({"id": f"llava-{i:03d}", "image": name, "source": r["source"], "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in detail."},
            {"from": "gpt", "value": r["caption"]}]})
    (root / "medtrinity_instruct.json").write_text(json.dumps(entries, indent=1) + "\n")
    with open(root / "medtrinity_instruct.jsonl", "w") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")


if __name__ == "__main__":
    write_demo(records(4))
    write_full(records(4))
    write_llava(records(1))
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"testdata: {total / 1e6:.2f} MB")
