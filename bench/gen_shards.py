#!/usr/bin/env python3
"""Synthetic MedTrinity-25M-shaped shard sets for benchmarks (never committed).

  gen_shards.py demo --rows 1000000 --out DIR   # 25M_demo: image struct (~10 KB JPEG), id, caption
  gen_shards.py full --rows 25000000 --out DIR  # 25M_full: file_name, caption, source (no images)

Images are a pool of real crops (from shared/data) encoded as JPEG; every row gets its
own copy with a JPEG comment segment holding the row number, so every image is unique
by sha256 and still decodes. Row groups follow Hugging Face `datasets`: 100 rows for
image datasets; text shards use 10,000-row groups.
"""
import argparse
import io
import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"

MODALITIES = [("computed tomography (CT) scan", ["head", "chest", "abdomen", "pelvis", "liver"]),
              ("magnetic resonance imaging (MRI) scan", ["brain", "knee", "spine", "prostate"]),
              ("chest X-ray", ["chest", "lung"]),
              ("histopathology image stained with H&E", ["colon tissue", "breast tissue", "lymph node"]),
              ("ultrasound image", ["thyroid", "kidney", "liver"]),
              ("fundus photograph", ["retina"]),
              ("dermoscopy image", ["skin"]),
              ("endoscopy image", ["stomach", "colon"])]
SOURCES = ["tcia", "chexpert", "roco", "pmc-oa", "isic", "kvasir", "slake", "tcga", "brats", "quilt"]
POS = ["left upper", "upper center", "right upper", "left-center", "center", "right-center",
       "left lower", "lower center", "right lower"]
TEXTURE = ["hypodense with a heterogeneous texture", "hyperintense and homogeneous",
           "densely stained with irregular borders", "hypoechoic with smooth margins",
           "darker and granular", "brighter with a mottled appearance"]
RELATION = ["It is adjacent to the surrounding {o} tissue, suggesting a mass effect that may displace nearby structures.",
            "Compared to the surrounding {o} parenchyma, the region shows a distinct border without clear invasion.",
            "The lesion abuts neighbouring structures of the {o} and could indicate infiltration into adjacent tissue.",
            "Its relationship to the nearby vessels of the {o} suggests a reactive process rather than an invasive one."]
EXTRA = ["Additional findings include mild degenerative changes and no acute abnormality elsewhere in the field of view.",
         "The overall image quality is adequate for interpretation, with good contrast between tissue compartments.",
         "Clinical correlation is recommended, as the appearance may overlap with inflammatory or neoplastic conditions.",
         ""]


VOCAB = None


def vocabulary(rng, size=3000):
    """Pseudo-words so captions compress like real prose, not like a template."""
    letters = np.array(list("etaoinshrdlcumwfgypbvk"))
    return ["".join(rng.choice(letters, int(rng.integers(3, 11)))) for _ in range(size)]


def captions(n, rng):
    global VOCAB
    VOCAB = VOCAB or vocabulary(rng)
    words = rng.integers(0, len(VOCAB), (n, 12))
    free = [" ".join(VOCAB[w] for w in row[: 6 + row[0] % 7]) for row in words]
    m = rng.integers(0, len(MODALITIES), n)
    org = rng.integers(0, 16, n)
    pos = rng.integers(0, len(POS), n)
    tex = rng.integers(0, len(TEXTURE), n)
    rel = rng.integers(0, len(RELATION), n)
    ext = rng.integers(0, len(EXTRA), n)
    area = rng.uniform(0.2, 35.0, n)
    out = []
    for i in range(n):
        mod, organs = MODALITIES[m[i]]
        o = organs[org[i] % len(organs)]
        out.append(f"The image is a {mod} of the {o}, showing the anatomical structures of the region. "
                   f"The region of interest is located in the {POS[pos[i]]} of the image, occupying approximately "
                   f"{area[i]:.1f}% of the area. The lesion appears {TEXTURE[tex[i]]}. "
                   f"{RELATION[rel[i]].format(o=o)} {EXTRA[ext[i]]} Notes: {free[i]}.")
    return out


def jpeg_pool(rng, size=256):
    sources = [Image.open(p).convert("RGB") for p in sorted(SHARED.glob("*")) if p.suffix in (".png", ".jpg")]
    pool = []
    while len(pool) < size:
        img = sources[len(pool) % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch))
        side = int(rng.choice([224, 256, 320, 384]))
        crop = crop.resize((side, max(8, int(side * ch / cw))), Image.BICUBIC)
        if len(pool) % 3 == 0:
            crop = crop.convert("L")
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=int(rng.integers(60, 85)))
        pool.append(buf.getvalue())
    return pool


def unique_jpeg(base, row):
    tag = f"row {row}".encode()
    return base[:2] + b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag + base[2:]


def demo(args):
    rng = np.random.default_rng(args.seed)
    pool = jpeg_pool(rng)
    print(f"JPEG pool: mean {np.mean([len(p) for p in pool]) / 1e3:.1f} KB", file=sys.stderr)
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("id", pa.string()), ("caption", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": {
                           "image": {"_type": "Image"}, "id": {"dtype": "string", "_type": "Value"},
                           "caption": {"dtype": "string", "_type": "Value"}}}})})
    shards = -(-args.rows // args.shard_rows)
    row = 0
    for s in range(shards):
        n = min(args.shard_rows, args.rows - row)
        path = args.out / f"train-{s:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, schema) as w:
            for start in range(0, n, 10_000):
                m = min(10_000, n - start)
                picks = rng.integers(0, len(pool), m)
                rows = range(row + start, row + start + m)
                images = [{"bytes": unique_jpeg(pool[p], r), "path": f"{r:09d}.jpg"} for p, r in zip(picks, rows)]
                ids = [f"{r:08x}-{(r * 2654435761) & 0xffff:04x}-11ef-8929-{r * 40503 & 0xffffffffffff:012x}" for r in rows]
                table = pa.table({"image": images, "id": ids, "caption": captions(m, rng)}, schema=schema)
                w.write_table(table, row_group_size=100)
        row += n
        print(f"{path} ({n} rows)", file=sys.stderr)


def full(args):
    rng = np.random.default_rng(args.seed)
    shards = -(-args.rows // args.shard_rows)
    row = 0
    for s in range(shards):
        n = min(args.shard_rows, args.rows - row)
        path = args.out / f"train-{s:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, pa.schema([("file_name", pa.string()), ("caption", pa.string()), ("source", pa.string())])) as w:
            for start in range(0, n, 100_000):
                m = min(100_000, n - start)
                src = rng.integers(0, len(SOURCES), m)
                names = [f"{SOURCES[k]}_{r:09d}.jpg" for k, r in zip(src, range(row + start, row + start + m))]
                table = pa.table({"file_name": names, "caption": captions(m, rng), "source": [SOURCES[k] for k in src]})
                w.write_table(table, row_group_size=10_000)
        row += n
        print(f"{path} ({n} rows)", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layout", choices=["demo", "full"])
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shard-rows", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.shard_rows = args.shard_rows or (50_000 if args.layout == "demo" else 1_000_000)
    args.out.mkdir(parents=True, exist_ok=True)
    (demo if args.layout == "demo" else full)(args)


if __name__ == "__main__":
    main()
