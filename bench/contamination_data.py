"""Data for bench/contamination.sh: N_BENCH benchmark images and a training set of
N_TRAIN distinct images (shown REPEAT times under other ids, as 1M rows), with copies of
some benchmark images planted in it: exact (same pixels, PNG instead of JPEG), re-encoded,
resized and cropped.

    python contamination_data.py OUT [N_BENCH] [N_TRAIN] [REPEAT]

Writes OUT/bench.parquet and OUT/train-000NN.parquet (HF Image struct columns, 224x224
JPEG images of random smooth shapes, like mt's 25M_demo shards) and OUT/planted.json.
"""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(sys.argv[1])
N_BENCH = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
N_TRAIN = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
REPEAT = int(sys.argv[4]) if len(sys.argv) > 4 else 10
SIDE = 224
rng = np.random.default_rng(7)


def picture(seed):
    """A distinct picture: a tilted gradient, 6-20 shapes and lines, grain."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    angle = r.uniform(0, 2 * np.pi)
    base = (np.cos(angle) * xx + np.sin(angle) * yy) / SIDE * r.uniform(40, 160) + r.uniform(0, 90)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    if seed % 3 == 0:
        img = img.convert("RGB")
    draw = ImageDraw.Draw(img)
    colour = lambda: int(r.integers(0, 256)) if img.mode == "L" else tuple(int(v) for v in r.integers(0, 256, 3))
    for _ in range(int(r.integers(6, 20))):
        x, y = r.integers(-30, SIDE, 2)
        w, h = r.integers(8, 120, 2)
        shape = r.integers(0, 3)
        if shape == 0:
            draw.ellipse([x, y, x + w, y + h], fill=colour())
        elif shape == 1:
            draw.rectangle([x, y, x + w, y + h], fill=colour())
        else:
            draw.line([x, y, x + w, y + h], fill=colour(), width=int(r.integers(1, 8)))
    grain = r.normal(0, 6, (SIDE, SIDE) if img.mode == "L" else (SIDE, SIDE, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.8))


def encode(img, fmt="JPEG", quality=85):
    buf = io.BytesIO()
    img.save(buf, fmt, quality=quality) if fmt == "JPEG" else img.save(buf, fmt)
    return buf.getvalue()


def write(path, ids, images, captions):
    image = pa.array(
        [{"bytes": b, "path": f"{i}.jpg"} for i, b in zip(ids, images)],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table({"id": ids, "image": image, "caption": captions})
    pq.write_table(table, path, row_group_size=2048)


OUT.mkdir(parents=True, exist_ok=True)
bench = [picture(10_000_000 + i) for i in range(N_BENCH)]
# Benchmark images planted as exact copies are PNG (lossless: their pixels are the same
# whichever decoder reads them), the others JPEG.
bench_bytes = [encode(b, "PNG") if i % 4 == 0 else encode(b) for i, b in enumerate(bench)]
write(OUT / "bench.parquet", [f"bench-{i}" for i in range(N_BENCH)],
      bench_bytes, ["benchmark image"] * N_BENCH)

planted = {}
train_bytes = []
for i in range(N_TRAIN):
    if i % 1000 == 0 and i // 1000 < N_BENCH:
        b = bench[i // 1000]
        kind = ["exact", "reencoded", "resized", "cropped"][(i // 1000) % 4]
        if kind == "exact":
            # The same pixels as the benchmark's (PNG) file, stored as BMP.
            data = encode(b, "BMP")
        elif kind == "reencoded":
            data = encode(b, quality=60)
        elif kind == "resized":
            data = encode(b.resize((SIDE // 2, SIDE // 2)))
        else:
            data = encode(b.crop((11, 0, SIDE, SIDE - 11)))  # 5% off two sides
        planted[i] = {"bench": f"bench-{i // 1000}", "kind": kind}
        train_bytes.append(data)
    else:
        train_bytes.append(encode(picture(i)))
for r in range(REPEAT):
    ids = [f"r{r}-{i}" for i in range(N_TRAIN)]
    write(OUT / f"train-{r:05}.parquet", ids, train_bytes, ["training image"] * N_TRAIN)
(OUT / "planted.json").write_text(json.dumps(planted))
print(f"{N_BENCH} benchmark images, {N_TRAIN} x {REPEAT} training rows, {len(planted)} planted copies")
