#!/usr/bin/env python3
"""What `mt inspect` computes on 25M_demo-shaped shards, the way a Python user would
write it: pyarrow for parquet, Pillow for image headers, hashlib for sha256, re for the
caption rules (bench/rules.py), numpy for quantiles. Prints a small JSON summary.

    inspect_baseline.py SHARD_DIR [SHARD_DIR ...]
"""
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

import rules

PART_RE = [re.compile(rules.term_regex([t for _, ts in rules.MODALITIES for t in ts]), re.I),
           re.compile(rules.term_regex([t for _, ts in rules.ORGANS for t in ts]), re.I)]
PART_RE += [re.compile(rules.term_regex(rules.OTHER["roi_location"]), re.I),
            re.compile(rules.term_regex(rules.OTHER["roi_area"]) + "|" + rules.AREA_NUMBER, re.I),
            re.compile(rules.term_regex(rules.OTHER["texture"]), re.I),
            re.compile(rules.term_regex(rules.OTHER["relations"]), re.I)]
MOD_NAMES = {t.rstrip("*"): name for name, ts in rules.MODALITIES for t in ts}
ORG_NAMES = {t.rstrip("*"): name for name, ts in rules.ORGANS for t in ts}


def canonical(match, names):
    word = match.group(0).lower()
    for term in sorted(names, key=len, reverse=True):
        if word.startswith(term):
            return names[term]
    return word


def main(paths):
    files = sorted(f for p in paths for f in (Path(p).rglob("*.parquet") if Path(p).is_dir() else [Path(p)]))
    rows = row_groups = nbytes = 0
    ids, hashes = set(), {}
    chars, words, img_bytes, widths, heights, aspects = [], [], [], [], [], []
    parts = [0] * 6
    modality, organ, formats, modes = {}, {}, {}, {}
    undecodable = []
    nulls = {}
    for f in files:
        pf = pq.ParquetFile(f)
        nbytes += f.stat().st_size
        row_groups += pf.num_row_groups
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg)
            for name in t.column_names:
                nulls[name] = nulls.get(name, 0) + t.column(name).null_count
            for img, id_, cap in zip(t.column("image").to_pylist(), t.column("id").to_pylist(), t.column("caption").to_pylist()):
                rows += 1
                ids.add(id_)
                if cap is not None:
                    chars.append(len(cap))
                    words.append(len(cap.split()))
                    for k, r in enumerate(PART_RE):
                        m = r.search(cap)
                        if m:
                            parts[k] += 1
                            if k == 0:
                                v = canonical(m, MOD_NAMES)
                                modality[v] = modality.get(v, 0) + 1
                            elif k == 1:
                                v = canonical(m, ORG_NAMES)
                                organ[v] = organ.get(v, 0) + 1
                b = img["bytes"] if img else None
                if b is None:
                    continue
                img_bytes.append(len(b))
                h = hashlib.sha256(b).digest()[:16]
                hashes[h] = hashes.get(h, 0) + 1
                try:
                    with Image.open(io.BytesIO(b)) as im:
                        widths.append(im.width)
                        heights.append(im.height)
                        aspects.append(im.width / im.height)
                        formats[im.format] = formats.get(im.format, 0) + 1
                        modes[im.mode] = modes.get(im.mode, 0) + 1
                except Exception as e:  # noqa: BLE001
                    undecodable.append((id_, str(e)))

    def summary(v):
        a = np.asarray(v)
        return {"min": int(a.min()), "mean": float(a.mean()), "median": float(np.median(a)),
                "p95": float(np.percentile(a, 95)), "max": int(a.max()),
                "histogram": np.histogram(a, bins=20)[0].tolist()} if len(a) else None

    print(json.dumps({
        "rows": rows, "row_groups": row_groups, "bytes": nbytes, "nulls": nulls,
        "distinct_ids": len(ids),
        "chars": summary(chars), "words": summary(words),
        "parts": dict(zip(rules.PARTS, parts)),
        "modality": modality, "organ": organ,
        "images": len(img_bytes), "width": summary(widths), "height": summary(heights),
        "aspect_median": float(np.median(aspects)) if aspects else None,
        "image_bytes": summary(img_bytes), "formats": formats, "modes": modes,
        "undecodable": len(undecodable),
        "duplicate_groups": sum(1 for c in hashes.values() if c > 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
