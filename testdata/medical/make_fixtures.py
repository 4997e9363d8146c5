"""Fixtures and reference pictures for `mt convert image` (tests/it/convert_image.rs).

Run by hand, not by CI, from the repository root:

    python3 -m venv testdata/medical/.venv
    testdata/medical/.venv/bin/pip install pydicom==3.0.2 numpy==2.4.6 nibabel==5.4.2 pillow==13.0.0
    testdata/medical/.venv/bin/python testdata/medical/make_fixtures.py [SHARED_DATA]

SHARED_DATA defaults to ../shared/data (the workspace's real medical files). It copies
the real files used into dicom/ and nifti/, writes the synthetic ones (MONOCHROME1,
3-frame, RGB DICOM; a scaled 4D NIfTI), and writes the references into expected/:

- DICOM grey: pydicom's apply_modality_lut then apply_voi_lut (window index 0, the
  standard's LINEAR function), normalised from pydicom's output range to [0, 1] and
  checked against a plain numpy version of PS3.3 C.11.2.1.2.1; without a window (or for
  `--window auto`) the min-max window centre (min + max + 1) / 2, width max - min + 1 of
  the modality values (all frames together); MONOCHROME1 inverted as 1 - y. Levels are
  floor(y * 255 + 0.5) (8-bit) or floor(y * 65535 + 0.5) (16-bit).
- NIfTI: nibabel's get_fdata() (scl_slope/scl_inter applied), np.percentile (default
  linear method) of the finite voxels at 0.5 and 99.5, y = clip((x - lo) / (hi - lo), 0, 1),
  slice k across axis a = np.take(data, k, axis=a).T (rows = higher remaining axis).
- expected.json: the metadata the sidecars must carry.
"""

import gzip
import json
import shutil
import struct
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
SHARED = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data"
REAL_DICOM = ["CT_small.dcm", "MR_small.dcm", "liver_1frame.dcm", "JPEG-lossy.dcm", "MR_truncated.dcm"]
REAL_NIFTI = ["anatomical.nii", "standard.nii.gz"]
rng = np.random.default_rng(7)


def new_dataset(rows, cols, **attrs):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(attrs)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rows, cols
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def synthetic_dicoms(out):
    # MONOCHROME1, 12 bits stored, rescale, two windows (the first one counts).
    ramp = np.add.outer(np.arange(24) * 100, np.arange(32) * 40) + rng.integers(0, 50, (24, 32))
    ds = new_dataset(
        24, 32, Modality="CR", BodyPartExamined="CHEST", PhotometricInterpretation="MONOCHROME1",
        SamplesPerPixel=1, BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0,
        RescaleSlope=2, RescaleIntercept=-100, WindowCenter=[3000, 100], WindowWidth=[4000, 50],
        PixelSpacing=[0.5, 0.25], SeriesDescription="synthetic MONOCHROME1",
    )
    ds.PixelData = np.clip(ramp, 0, 4095).astype("<u2").tobytes()
    ds.save_as(out / "mono1.dcm", enforce_file_format=True)

    # Three signed frames with different ranges, no window: min-max over all frames.
    frames = np.stack([rng.integers(-200, 300, (16, 20)) + 400 * f for f in range(3)])
    ds = new_dataset(
        16, 20, Modality="CT", PhotometricInterpretation="MONOCHROME2", SamplesPerPixel=1,
        BitsAllocated=16, BitsStored=16, HighBit=15, PixelRepresentation=1, NumberOfFrames=3,
        RescaleSlope=1, RescaleIntercept=-1024, PixelSpacing=[0.7, 0.7], SliceThickness=1.25,
        SeriesDescription="synthetic 3 frames",
    )
    ds.PixelData = frames.astype("<i2").tobytes()
    ds.save_as(out / "multiframe.dcm", enforce_file_format=True)

    # RGB, planar configuration 1 (colour-by-plane).
    rgb = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
    ds = new_dataset(
        6, 8, Modality="XC", PhotometricInterpretation="RGB", SamplesPerPixel=3,
        PlanarConfiguration=1, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
    )
    ds.PixelData = rgb.transpose(2, 0, 1).tobytes()
    ds.save_as(out / "rgb.dcm", enforce_file_format=True)


def synthetic_nifti(out):
    """Int16 (5, 4, 3, 2) with scl_slope 2, scl_inter 10 patched into the header."""
    raw = rng.integers(-50, 200, (5, 4, 3, 2)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.diag([1.5, 2.0, 2.5, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    tmp = out / "tiny4d.nii"
    img.to_filename(tmp)
    data = bytearray(tmp.read_bytes())
    data[112:120] = struct.pack("<ff", 2.0, 10.0)  # scl_slope, scl_inter (little endian)
    with gzip.GzipFile(out / "tiny4d.nii.gz", "wb", mtime=0) as f:
        f.write(bytes(data))
    tmp.unlink()


def levels(y, bits=8):
    top = 255 if bits == 8 else 65535
    return np.floor(np.clip(y, 0, 1) * top + 0.5).astype(np.uint8 if bits == 8 else np.uint16)


def linear_window(x, c, w):
    """PS3.3 C.11.2.1.2.1 with ymin 0, ymax 1."""
    y = ((x - (c - 0.5)) / max(w - 1, 1e-300)) + 0.5
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, y)
    return np.where(x > c - 0.5 + (w - 1) / 2, 1.0, y)


def dicom_reference(ds, window=None):
    """[0, 1] grey values of every frame; `window` = (c, w), 'auto' or None (the file's)."""
    ds = pydicom.dcmread(ds.filename)  # a private copy to set windows on
    mod = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    if window == "auto" or (window is None and "WindowCenter" not in ds):
        lo, hi = float(mod.min()), float(mod.max())
        window = ((lo + hi + 1) / 2, hi - lo + 1)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
        if "VOILUTFunction" in ds:
            del ds.VOILUTFunction
    c = float(np.ravel([ds.WindowCenter])[0])
    w = float(np.ravel([ds.WindowWidth])[0])
    flat = np.concatenate([mod.ravel(), [-1e12, 1e12]])
    out = apply_voi_lut(flat, ds, index=0).astype(np.float64)
    y_min, y_max = out[-2], out[-1]
    y = ((out[:-2] - y_min) / (y_max - y_min)).reshape(mod.shape)
    mine = linear_window(mod, c, w)
    assert np.abs(mine - y).max() < 1e-9, (ds.filename, np.abs(mine - y).max())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1.0 - y
    return y, {"center": c, "width": w}


def save_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, optimize=True)


def text(ds, key):
    v = ds.get(key)
    return str(v).strip() if v not in (None, "") else None


def main():
    dicom_dir, nifti_dir, exp_dir = HERE / "dicom", HERE / "nifti", HERE / "expected"
    for d in (dicom_dir, nifti_dir):
        d.mkdir(exist_ok=True)
    if exp_dir.exists():
        shutil.rmtree(exp_dir)
    for name in REAL_DICOM:
        shutil.copyfile(SHARED / "dicom" / name, dicom_dir / name)
    for name in REAL_NIFTI:
        shutil.copyfile(SHARED / "nifti" / name, nifti_dir / name)
    synthetic_dicoms(dicom_dir)
    synthetic_nifti(nifti_dir)

    expected = {}
    for stem in ["CT_small", "MR_small", "liver_1frame", "mono1", "multiframe"]:
        ds = pydicom.dcmread(dicom_dir / f"{stem}.dcm")
        y, window = dicom_reference(ds)
        frames = y if y.ndim == 3 else y[None]
        for i, f in enumerate(frames):
            suffix = f"_f{i:04d}" if len(frames) > 1 else ""
            save_png(exp_dir / f"{stem}{suffix}.png", levels(f))
        ts = ds.file_meta.TransferSyntaxUID
        expected[stem] = {
            "modality": text(ds, "Modality"),
            "body_part": text(ds, "BodyPartExamined"),
            "series_description": text(ds, "SeriesDescription"),
            "pixel_spacing": [float(v) for v in ds.PixelSpacing] if "PixelSpacing" in ds else None,
            "slice_thickness": float(ds.SliceThickness) if "SliceThickness" in ds else None,
            "rows": int(ds.Rows), "columns": int(ds.Columns), "frames": len(frames),
            "photometric_interpretation": str(ds.PhotometricInterpretation),
            "transfer_syntax": str(ts),
            "rescale": {"slope": float(ds.get("RescaleSlope", 1)), "intercept": float(ds.get("RescaleIntercept", 0))},
            "window": {"source": "file" if "WindowCenter" in ds else "min-max", **window},
        }
    # Overrides: --window 40,400 on CT, --window auto on MR, 16-bit MR.
    ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
    save_png(exp_dir / "CT_small_w40_400.png", levels(dicom_reference(ds, (40.0, 400.0))[0]))
    ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")
    save_png(exp_dir / "MR_small_auto.png", levels(dicom_reference(ds, "auto")[0]))
    save_png(exp_dir / "MR_small_16.png", levels(dicom_reference(ds)[0], bits=16))
    rgb = pydicom.dcmread(dicom_dir / "rgb.dcm").pixel_array
    save_png(exp_dir / "rgb.png", rgb)
    expected["rgb"] = {"rows": 6, "columns": 8, "frames": 1, "photometric_interpretation": "RGB"}

    for name in REAL_NIFTI + ["tiny4d.nii.gz"]:
        img = nib.load(nifti_dir / name)
        data = img.get_fdata()
        finite = data[np.isfinite(data)]
        lo, hi = np.percentile(finite, [0.5, 99.5])
        y = np.clip((data - lo) / (hi - lo), 0, 1) if hi > lo else (data > lo).astype(float)
        stem = name.split(".")[0]
        volumes = [y] if y.ndim == 3 else [y[..., t] for t in range(y.shape[3])]
        for axis, letter in enumerate("xyz"):
            if axis != 2 and stem != "anatomical":
                continue
            for t, vol in enumerate(volumes):
                tpart = f"_t{t:04d}" if len(volumes) > 1 else ""
                for k in range(vol.shape[axis]):
                    sl = np.take(vol, k, axis=axis).T
                    save_png(exp_dir / stem / f"{stem}{tpart}_{letter}{k:04d}.png", levels(sl))
        h = img.header
        slope, inter = img.dataobj.slope, img.dataobj.inter  # nibabel moves them off the header
        expected[stem] = {
            "shape": [int(d) for d in img.shape],
            "pixdim": [float(p) for p in h["pixdim"][1 : 1 + len(img.shape)]],
            "percentile_lo": float(lo), "percentile_hi": float(hi),
            "rescale": None if (slope, inter) == (1.0, 0.0)
            else {"slope": float(slope), "intercept": float(inter)},
            "spacing_unit": h.get_xyzt_units()[0] if h.get_xyzt_units()[0] != "unknown" else None,
        }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file() and ".venv" not in p.parts)
    print(f"fixtures written; {total / 1024:.0f} KiB in testdata/medical")


if __name__ == "__main__":
    main()
