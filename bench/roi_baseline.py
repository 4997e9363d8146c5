"""`mt roi`'s measuring against numpy + scikit-image (bench/roi.sh).

  roi_baseline.py make N OUT.bin   N 512x512 binary masks (1-4 random filled ellipses
                                   each, seed 0), bit-packed (np.packbits, MSB first),
                                   512*512/8 bytes per mask, one after the other
  roi_baseline.py run MASKS.bin    per mask: unpack, skimage.measure.label (8-connected)
                                   + regionprops (bbox, area, centroid per component),
                                   combined into one ROI per label (box, area, centroid,
                                   component count) + position words; prints
                                   `masks_per_s N checksum` (the same line as
                                   examples/roi_bench.rs)

The timed loop starts after the file is read; unpacking each mask is in it (as in the
Rust program). The checksum is FNV-1a 64 over one line per mask with an ROI,
`index area x0 y0 x1 y1 components sx2 sy2 position`, where sx2 / sy2 are the sums of
2x+1 / 2y+1 over the pixels (twice the centroid times the area, exact integers).
"""

import sys
import time

import numpy as np

SIZE = 512
MASK_BYTES = SIZE * SIZE // 8


def make(n, out):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    with open(out, "wb") as f:
        for _ in range(n):
            m = np.zeros((SIZE, SIZE), dtype=bool)
            for _ in range(rng.integers(1, 5)):
                cx, cy = rng.uniform(0, SIZE, 2)
                a, b = rng.uniform(6, 80, 2)
                t = rng.uniform(0, np.pi)
                r = int(max(a, b)) + 1
                x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, SIZE)
                y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, SIZE)
                if x0 >= x1 or y0 >= y1:
                    continue
                dx = xx[y0:y1, x0:x1] + 0.5 - cx
                dy = yy[y0:y1, x0:x1] + 0.5 - cy
                u = (dx * np.cos(t) + dy * np.sin(t)) / a
                v = (-dx * np.sin(t) + dy * np.cos(t)) / b
                m[y0:y1, x0:x1] |= u * u + v * v <= 1.0
            f.write(np.packbits(m).tobytes())


def position_words(cx, cy, w, h):
    """Anatomical orientation; the scheme of src/core/roi/measure.rs."""

    def third(v, size):
        return -1 if 3.0 * v < size else (1 if 3.0 * v > 2.0 * size else 0)

    col, row = third(cx, w), third(cy, h)
    if col == 0 and row == 0:
        return "center"
    return ["left", "center", "right"][col + 1] + " " + ["upper", "center", "lower"][row + 1]


def run(path):
    from skimage.measure import label, regionprops

    data = np.fromfile(path, dtype=np.uint8)
    n = data.size // MASK_BYTES
    results = []
    start = time.perf_counter()
    for i in range(n):
        m = np.unpackbits(data[i * MASK_BYTES : (i + 1) * MASK_BYTES]).reshape(SIZE, SIZE)
        props = regionprops(label(m, connectivity=2))
        if not props:
            results.append(None)
            continue
        area = sx2 = sy2 = 0
        y0 = x0 = SIZE
        y1 = x1 = 0
        for p in props:
            a = int(p.area)
            r0, c0, r1, c1 = p.bbox
            cr, cc = p.centroid
            area += a
            # 2 * sum(x + 0.5) = 2 * centroid * area + area
            sx2 += round(2 * cc * a) + a
            sy2 += round(2 * cr * a) + a
            y0, x0, y1, x1 = min(y0, r0), min(x0, c0), max(y1, r1), max(x1, c1)
        cx, cy = sx2 / (2 * area), sy2 / (2 * area)
        results.append((area, x0, y0, x1, y1, len(props), sx2, sy2, position_words(cx, cy, SIZE, SIZE)))
    secs = time.perf_counter() - start
    h = 0xCBF29CE484222325
    for i, r in enumerate(results):
        if r is None:
            continue
        for byte in (" ".join(map(str, (i,) + r)) + "\n").encode():
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    print(f"{n / secs:.1f} {n} {h:016x}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(__doc__)
