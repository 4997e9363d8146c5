"""`mt convert llava` benchmark helpers (see convert_llava.sh).

    python convert_llava.py make N DIR      25M_demo-shaped parquet shards (id, image struct, caption)
    python convert_llava.py run DIR OUT     the baseline: pyarrow + Pillow writing the same files
"""

import io
import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CAPTION = ("The image is a computed tomography (CT) scan of the head, showing the brain parenchyma "
           "in detail. The region of interest is located in the lower right of the image.")


def make(n, out):
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    pool = []
    for i in range(64):
        img = Image.effect_noise((48 + i, 48 + i), 40 + i).convert("RGB" if i % 2 else "L")
        buf = io.BytesIO()
        img.save(buf, format="JPEG" if i % 2 else "PNG")
        pool.append(buf.getvalue())
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    per_shard = 25_000
    for s in range(0, n, per_shard):
        rows = range(s, min(n, s + per_shard))
        table = pa.table({
            "id": [f"{rng.getrandbits(64):016x}-{i}" for i in rows],
            "image": pa.array([{"bytes": pool[i % 64], "path": None} for i in rows], type=image_type),
            "caption": [CAPTION] * len(rows),
        })
        pq.write_table(table, out / f"train-{s // per_shard:05d}.parquet", row_group_size=1000)


def run(src, out):
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(out / "out.jsonl", "w") as f:
        for shard in sorted(src.glob("*.parquet")):
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    data = row["image"]["bytes"]
                    ext = {"JPEG": "jpg", "PNG": "png"}.get(Image.open(io.BytesIO(data)).format, "bin")
                    name = f"{row['id']}.{ext}"
                    (images / name).write_bytes(data)
                    f.write(json.dumps({"id": row["id"], "image": name, "conversations": [
                        {"from": "human", "value": "<image>\nDescribe the image in detail."},
                        {"from": "gpt", "value": row["caption"]}]}) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        run(Path(sys.argv[2]), Path(sys.argv[3]))
