"""`datasets` reads parquet shards with the Image feature, finds the rows of the
original, and reads them from the Hub cache that `mt download` filled. Run by
tests/it/interop.rs:

    python datasets_parquet.py OURS ORIGINAL_DIR

OURS is a folder of shards (`mt convert parquet` output), loaded with
`load_dataset("parquet", data_dir=OURS)`, or `hub:REPO:DIR`, loaded with
`load_dataset(REPO, data_dir=DIR)` with HF_HUB_OFFLINE=1 (so from the Hub cache alone);
ORIGINAL_DIR is a folder of shards. Prints one JSON object; tests/it/interop.rs holds the
expectations.
"""

import hashlib
import json
import sys

import numpy as np
from datasets import Image, load_dataset


def load(spec: str):
    if spec.startswith("hub:"):
        _, repo, data_dir = spec.split(":")
        return load_dataset(repo, data_dir=data_dir, split="train")
    return load_dataset("parquet", data_dir=spec, split="train")


def main() -> None:
    ours, original = load(sys.argv[1]), load(sys.argv[2])
    # The decoded pictures (PIL, through the Image feature) must equal the original's.
    orig_by_id = {row["id"]: row for row in original}
    pixels_differ = []
    for row in ours:
        theirs = orig_by_id.get(row["id"])
        if theirs is None or not np.array_equal(np.asarray(row["image"]), np.asarray(theirs["image"])):
            pixels_differ.append(row["id"])
    # And the stored bytes, undecoded.
    raw = ours.cast_column("image", Image(decode=False))
    orig_raw = {r["id"]: r for r in original.cast_column("image", Image(decode=False))}
    rows = {
        r["id"]: [r["caption"], hashlib.sha256(r["image"]["bytes"]).hexdigest()] for r in raw
    }
    orig_rows = {
        k: [r["caption"], hashlib.sha256(r["image"]["bytes"]).hexdigest()] for k, r in orig_raw.items()
    }
    print(
        json.dumps(
            {
                "features": {k: v.__class__.__name__ for k, v in ours.features.items()},
                "rows": len(ours),
                "original_rows": len(original),
                "same_rows": rows == orig_rows,
                "pixels_differ": pixels_differ,
                "first_image_mode_size": [ours[0]["image"].mode, list(ours[0]["image"].size)],
            }
        )
    )


if __name__ == "__main__":
    main()
