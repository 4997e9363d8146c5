"""nibabel's own NIfTI test files as the reference for `mt convert image` (tests/it/convert_image.rs).

    python nifti_corpus.py list LIST.json
        Writes the single-file NIfTI-1 and NIfTI-2 images (CIFTI-2 included) of the
        installed nibabel wheel's tests/data: [{path, version, shape}].
    python nifti_corpus.py check LIST.json OUT
        Compares the PNGs mt wrote into OUT (`--window auto --bits 16`, slices across
        axis 2) with nibabel's get_fdata(), one line per file; exits 1 on a mismatch.

Reference: nibabel's values (scl_slope/scl_inter applied), the min-max window of the
whole file's finite values (NaN becomes level 0) (centre (min + max + 1) / 2, width max - min + 1, LINEAR), levels
floor(y * 65535 + 0.5); slice k of volume t is data[:, :, k, t].T (rows follow the
second axis), named <stem>_z0042.png, with _t0001 before it when there are volumes.
"""

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dicom_corpus import main, read_png  # noqa: E402

CORPUS = Path(nib.__file__).parent / "tests" / "data"


def load(path):
    img = nib.load(path)
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    header = getattr(img, "nifti_header", img.header)  # CIFTI-2: the NIfTI-2 header beneath
    version = 2 if header["sizeof_hdr"] == 540 else 1
    return img, data, version


def listing(out):
    files = []
    for path in sorted(list(CORPUS.glob("*.nii")) + list(CORPUS.glob("*.nii.gz"))):
        try:
            img, data, version = load(path)
        except Exception:
            continue
        if data.ndim < 2 or data.ndim > 4:
            continue
        files.append({"path": str(path), "version": version, "shape": list(data.shape)})
    Path(out).write_text(json.dumps(files, indent=1))
    print(f"{len(files)} NIfTI files in {CORPUS}")


def check(listing_path, out):
    failures = 0
    for entry in json.loads(Path(listing_path).read_text()):
        path = Path(entry["path"])
        _, data, _ = load(path)
        lo, hi = np.nanmin(data), np.nanmax(data)
        c, w = (lo + hi + 1) / 2, hi - lo + 1
        y = np.clip((data - (c - 0.5)) / (w - 1) + 0.5, 0, 1) if w > 1 else (data > c - 0.5) * 1.0
        levels = np.nan_to_num(np.floor(y * 65535 + 0.5), nan=0.0)  # NaN is level 0
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        if levels.ndim == 2:
            levels = levels[:, :, None]
        volumes = levels.shape[3] if levels.ndim == 4 else 1
        worst = 0.0
        try:
            for t in range(volumes):
                for k in range(levels.shape[2]):
                    name = f"{stem}_t{t:04}_z{k:04}.png" if volumes > 1 else f"{stem}_z{k:04}.png"
                    want = (levels[:, :, k, t] if volumes > 1 else levels[:, :, k]).T
                    got = np.round(read_png(Path(out) / name) * 65535)
                    if got.shape != want.shape:
                        raise ValueError(f"{name}: shape {got.shape}, nibabel {want.shape}")
                    worst = max(worst, float(np.abs(got - want).max()))
        except (OSError, ValueError) as e:
            print(f"FAIL {path.name}: {e}")
            failures += 1
            continue
        ok = worst <= 1
        print(f"{'ok  ' if ok else 'FAIL'} {path.name} [NIfTI-{entry['version']} {entry['shape']}] max {worst:.0f} levels")
        failures += not ok
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(listing, check)
