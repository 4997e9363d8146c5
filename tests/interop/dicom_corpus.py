"""pydicom's own test files as the reference for `mt convert image` (tests/it/convert_image.rs).

    python dicom_corpus.py list LIST.json
        Writes the test files of the installed pydicom wheel that pydicom (with the
        pylibjpeg plugins) decodes to pixels: [{path, syntax, lossless, photometric}].
    python dicom_corpus.py check LIST.json OUT
        Compares the PNGs mt wrote into OUT (`--window auto --bits 16`) with pydicom's
        arrays, one line per file, and exits 1 on any mismatch.

The reference pictures follow mt's documented conversion: grey frames are the modality
values (pydicom's apply_modality_lut) through the min-max window of all frames (centre
(min + max + 1) / 2, width max - min + 1, the standard's LINEAR function), MONOCHROME1
inverted, levels floor(y * 65535 + 0.5). Colour frames are pydicom's RGB (YBR converted,
PALETTE COLOR through its lookup table) scaled from their bit depth to 16 bits:
floor(v / (2^bits - 1) * 65535 + 0.5). Lossless syntaxes must match to one level (float
rounding); lossy ones are decoded by other libraries on the two sides (libjpeg vs
jpeg-decoder, OpenJPEG vs its Rust port, CharLS on both), so they must agree within a
decoder tolerance: a mean absolute difference under 1% of the range and 99% of the
pixels within 3%.
"""

import json
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut

warnings.simplefilter("ignore")
CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def reference(path):
    """pydicom's frames [frames, rows, cols(, 3)] as mt writes them, in [0, 1]."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array  # YBR -> RGB by default
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pi = ds.PhotometricInterpretation
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    elif ds.SamplesPerPixel == 3:
        bits = int(ds.BitsStored)
    else:
        values = apply_modality_lut(arr, ds).astype(np.float64)
        lo, hi = values.min(), values.max()
        c, w = (lo + hi + 1) / 2, hi - lo + 1
        if w <= 1:
            y = (values > c - 0.5).astype(np.float64)
        else:
            y = np.clip(((values - (c - 0.5)) / (w - 1)) + 0.5, 0, 1)
        if pi == "MONOCHROME1":
            y = 1 - y
        return y.reshape((frames,) + y.shape[-2:]), True
    y = arr.astype(np.float64) / (2.0**bits - 1)
    return y.reshape((frames,) + y.shape[-3:]), False


def read_png(path):
    """The samples of a non-interlaced PNG in [0, 1] (Pillow reads 16-bit RGB as 8-bit)."""
    data = Path(path).read_bytes()
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    channels = {0: 1, 2: 3}[colour]
    bpp = channels * depth // 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * bpp)
    rows, prev = [], np.zeros(w * bpp, np.int64)
    for filt, line in zip(raw[:, 0], raw[:, 1:].astype(np.int64)):
        cur = line.copy()
        for i in range(len(cur)):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if filt == 1:
                cur[i] = (cur[i] + a) & 255
            elif filt == 2:
                cur[i] = (cur[i] + b) & 255
            elif filt == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif filt == 4:
                p, = [a + b - c]
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(cur)
        prev = cur
    img = np.stack(rows).astype(np.uint8)
    if depth == 16:
        img = img.view(">u2")
    img = img.reshape(h, w, channels).squeeze(-1) if channels == 1 else img.reshape(h, w, 3)
    return img.astype(np.float64) / (2**depth - 1)


def listing(out):
    files = []
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.suffix not in (".dcm", ""):
            continue
        try:
            ds = pydicom.dcmread(path)
            reference(path)
        except Exception:
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
        files.append(
            {
                "path": str(path),
                "syntax": str(syntax),
                "lossless": not syntax.is_compressed or not syntax_is_lossy(ds, syntax),
                "photometric": ds.PhotometricInterpretation,
            }
        )
    Path(out).write_text(json.dumps(files, indent=1))
    print(f"{len(files)} decodable files in {CORPUS}")


def syntax_is_lossy(ds, syntax):
    lossy = {
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy allowed)
    }
    return str(syntax) in lossy


def check(listing_path, out):
    failures = 0
    for entry in json.loads(Path(listing_path).read_text()):
        path = Path(entry["path"])
        want, grey = reference(path)
        frames = want.shape[0]
        names = [f"{path.stem}.png"] if frames == 1 else [f"{path.stem}_f{f:04}.png" for f in range(frames)]
        try:
            got = np.stack([read_png(Path(out) / n) for n in names])
        except FileNotFoundError as e:
            print(f"FAIL {path.name}: {e}")
            failures += 1
            continue
        if got.shape != want.shape:
            print(f"FAIL {path.name}: shape {got.shape}, pydicom {want.shape}")
            failures += 1
            continue
        diff = np.abs(got - want)
        level = 1.0 / 65535
        if entry["lossless"]:
            ok = diff.max() <= level * 1.01
        else:
            ok = diff.mean() < 0.01 and np.quantile(diff, 0.99) <= 0.03
        kind = "lossless" if entry["lossless"] else "lossy"
        print(
            f"{'ok  ' if ok else 'FAIL'} {path.name} [{entry['syntax']} {entry['photometric']} {kind}]"
            f" max {diff.max() * 65535:.1f} mean {diff.mean() * 65535:.2f} levels"
        )
        failures += not ok
    sys.exit(1 if failures else 0)


def main(listing, check):
    """`list LIST.json` or `check LIST.json OUT`, as the module docs say."""
    if sys.argv[1] == "list":
        listing(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main(listing, check)
