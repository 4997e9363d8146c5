//! f32 products with a handful of left-hand rows, the shape decoding makes (one token
//! per sequence): `y = s · x b` with `b` stored `(k, n)` (rows contiguous), or
//! `y = s · x bᵀ` with `b` stored `(n, k)`. With so few rows the product is bound by
//! reading `b`, and gemm's packing and tiling for many rows reads it at a third of the
//! memory's speed; these kernels keep the rows' sums in registers (or in L1) and read
//! `b` front to back. AVX-512 only ([`supported`]); callers use gemm everywhere else.

use rayon::prelude::*;

/// Left-hand rows up to which these kernels beat gemm (measured on AVX-512: at 16 rows
/// they still read the weights once, gemm's packing overhead is not yet amortised).
pub(crate) const MAX_ROWS: usize = 16;

/// Rows of `b` per step of [`times_rows`]' kernel: eight halve the loads and stores of
/// `y` that four take, and the sums still stay in registers.
const STEP: usize = 8;

/// A row-major matrix inside a slice: row `r` starts at `r * stride`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

impl Rows<'_> {
    /// Panics unless `rows x cols` fits in the slice.
    fn check(&self, rows: usize, cols: usize) {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * self.stride + cols <= self.data.len(),
            "matrix outside its slice"
        );
    }
}

/// Whether this CPU runs the kernels.
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The output `y` `(m, n)`, rows `stride` apart.
pub(crate) struct Out<'a> {
    pub data: &'a mut [f32],
    pub stride: usize,
}

/// The raw operands of one kernel call: `x`, `b` and `y` with their row strides, and the
/// output columns the call covers.
#[derive(Clone, Copy)]
struct Operands {
    x: *const f32,
    xs: usize,
    b: *const f32,
    bs: usize,
    y: *mut f32,
    ys: usize,
    cols: usize,
}

/// Panics unless this CPU runs the kernels and `y` `(m, n)`, `x` `(m, k)` and `b`
/// (`b_shape`) fit their slices.
fn check_operands(
    y: &Out,
    (m, n, k): (usize, usize, usize),
    x: &Rows,
    b: &Rows,
    b_shape: (usize, usize),
) {
    assert!(supported(), "small-m matmul kernels need AVX-512");
    Rows {
        data: y.data,
        stride: y.stride,
    }
    .check(m, n);
    x.check(m, k);
    b.check(b_shape.0, b_shape.1);
}

/// `y = scale · x b` for `x` `(m, k)` and `b` `(k, n)`; see [`times_rows_each`].
pub(crate) fn times_rows(
    (m, n, k): (usize, usize, usize),
    y: Out,
    x: Rows,
    b: Rows,
    scale: f32,
    parallel: bool,
) {
    times_rows_each((m, k), x, &mut [Product { y, b, n }], scale, parallel);
}

/// One product of [`times_rows_each`]: `y` `(m, n)` from `b` `(k, n)`.
pub(crate) struct Product<'a> {
    pub y: Out<'a>,
    pub b: Rows<'a>,
    pub n: usize,
}

/// `y = scale · x b` for every product, one `x` `(m, k)` for all. With `parallel`, each
/// of rayon's threads takes a contiguous block of rows of every `b` (its own partial
/// sums, added up at the end), so every thread reads memory front to back, and all the
/// products share one fork (the projections that read the same input, q/k/v or
/// gate/up, cost one wake-up). Panics unless [`supported`] and every matrix fits its
/// slice.
pub(crate) fn times_rows_each(
    (m, k): (usize, usize),
    x: Rows,
    products: &mut [Product],
    scale: f32,
    parallel: bool,
) {
    for p in products.iter() {
        check_operands(&p.y, (m, p.n, k), &x, &p.b, (k, p.n));
    }
    const CHUNK: usize = 2048;
    let parts = if parallel {
        rayon::current_num_threads().min(k.div_ceil(64)).max(1)
    } else {
        1
    };
    let rows_per = k.div_ceil(parts).div_ceil(STEP) * STEP;
    // Part `p`'s outputs: one `(data, stride, n)` per product.
    let run = |p: usize, outs: Vec<(&mut [f32], usize, usize)>, bs: &[Rows], s: f32| {
        let k0 = p * rows_per;
        let k1 = k.min(k0 + rows_per);
        for ((out, os, n), b) in outs.into_iter().zip(bs) {
            if k0 >= k1 {
                (0..m).for_each(|i| out[i * os..][..n].fill(0.0));
                continue;
            }
            for c0 in (0..n).step_by(CHUNK) {
                let w = CHUNK.min(n - c0);
                for kb in (k0..k1).step_by(STEP) {
                    let kr = (k1 - kb).min(STEP);
                    for r0 in (0..m).step_by(4) {
                        // SAFETY: the checks above (and `out` holding `m` rows of `os`)
                        // keep every access inside its matrix.
                        unsafe {
                            avx512::rows_step(
                                (m - r0).min(4),
                                kr,
                                Operands {
                                    x: x.data.as_ptr().add(r0 * x.stride + kb),
                                    xs: x.stride,
                                    b: b.data.as_ptr().add(kb * b.stride + c0),
                                    bs: b.stride,
                                    y: out.as_mut_ptr().add(r0 * os + c0),
                                    ys: os,
                                    cols: w,
                                },
                                kb == k0,
                                if kb + kr == k1 { s } else { 1.0 },
                            )
                        }
                    }
                }
            }
        }
    };
    let bs: Vec<Rows> = products.iter().map(|p| p.b).collect();
    fn mine<'a>(p: &'a mut Product) -> (&'a mut [f32], usize, usize) {
        (&mut *p.y.data, p.y.stride, p.n)
    }
    if parts == 1 {
        run(0, products.iter_mut().map(mine).collect(), &bs, scale);
        return;
    }
    let widths: Vec<usize> = products.iter().map(|p| p.n).collect();
    let per_part: usize = m * widths.iter().sum::<usize>();
    let mut partial = vec![0f32; (parts - 1) * per_part];
    let mut outs = vec![products.iter_mut().map(mine).collect::<Vec<_>>()];
    for mut rest in partial.chunks_mut(per_part) {
        let mut part = Vec::with_capacity(widths.len());
        for &n in &widths {
            let (this, tail) = rest.split_at_mut(m * n);
            part.push((this, n, n));
            rest = tail;
        }
        outs.push(part);
    }
    outs.into_par_iter()
        .enumerate()
        .for_each(|(p, outs)| run(p, outs, &bs, 1.0));
    let mut offset = 0;
    for p in products.iter_mut() {
        let n = p.n;
        for i in 0..m {
            let row = &mut p.y.data[i * p.y.stride..][..n];
            for part in partial.chunks(per_part) {
                row.iter_mut()
                    .zip(&part[offset + i * n..][..n])
                    .for_each(|(a, b)| *a += b);
            }
            row.iter_mut().for_each(|a| *a *= scale);
        }
        offset += m * n;
    }
}

/// `y = scale · x bᵀ` for `x` `(m, k)` and `b` `(n, k)`, on this thread. Panics unless
/// [`supported`] and every matrix fits its slice.
pub(crate) fn times_cols((m, n, k): (usize, usize, usize), y: Out, x: Rows, b: Rows, scale: f32) {
    check_operands(&y, (m, n, k), &x, &b, (n, k));
    for j0 in (0..n).step_by(4) {
        for r0 in (0..m).step_by(4) {
            // SAFETY: as in `times_rows`; this loop is the only writer.
            unsafe {
                avx512::cols_tile(
                    (m - r0).min(4),
                    k,
                    Operands {
                        x: x.data.as_ptr().add(r0 * x.stride),
                        xs: x.stride,
                        b: b.data.as_ptr().add(j0 * b.stride),
                        bs: b.stride,
                        y: y.data.as_mut_ptr().add(r0 * y.stride + j0),
                        ys: y.stride,
                        cols: (n - j0).min(4),
                    },
                    scale,
                )
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Operands, STEP};

    /// The first `min(w, 16)` lanes of a register.
    fn lanes(w: usize) -> __mmask16 {
        ((1u32 << w.min(16)) - 1) as __mmask16
    }

    /// One step of `y[..rows, ..w] += x[..rows, ..kr] b[..kr, ..w]` over `kr <= STEP`
    /// rows of `b`, each read front to back (`y` starts from zero when `first`); the sum
    /// is multiplied by `scale` as it is stored. `rows <= 4`, any `w`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_step(rows: usize, kr: usize, o: Operands, first: bool, scale: f32) {
        unsafe {
            match rows {
                1 => rows_step_n::<1>(kr, o, first, scale),
                2 => rows_step_n::<2>(kr, o, first, scale),
                3 => rows_step_n::<3>(kr, o, first, scale),
                _ => rows_step_n::<4>(kr, o, first, scale),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_step_n<const M: usize>(kr: usize, o: Operands, first: bool, scale: f32) {
        let Operands {
            x,
            xs,
            b,
            bs,
            y,
            ys,
            cols: w,
        } = o;
        // SAFETY (whole body): rows `..kr` of `b` and columns `..kr` of `x`; rows past
        // `kr` repeat row 0 with a zero weight; columns masked to `w`.
        unsafe {
            let row: [*const f32; STEP] =
                std::array::from_fn(|r| b.add(if r < kr { r * bs } else { 0 }));
            let xv: [[f32; STEP]; M] = std::array::from_fn(|i| {
                std::array::from_fn(|r| if r < kr { *x.add(i * xs + r) } else { 0.0 })
            });
            let s = _mm512_set1_ps(scale);
            for c in (0..w).step_by(16) {
                let mask = lanes(w - c);
                let mut acc: [__m512; M] = std::array::from_fn(|i| {
                    if first {
                        _mm512_setzero_ps()
                    } else {
                        _mm512_maskz_loadu_ps(mask, y.add(i * ys + c))
                    }
                });
                for (r, row) in row.iter().enumerate() {
                    let bv = _mm512_maskz_loadu_ps(mask, row.add(c));
                    for (acc, xv) in acc.iter_mut().zip(&xv) {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(xv[r]), bv, *acc);
                    }
                }
                for (i, acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(y.add(i * ys + c), mask, _mm512_mul_ps(*acc, s));
                }
            }
        }
    }

    /// `y[..rows, ..cols] = scale · x[..rows, ..k] b[..cols, ..k]ᵀ`, `rows, cols <= 4`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn cols_tile(rows: usize, k: usize, o: Operands, scale: f32) {
        unsafe {
            match rows {
                1 => cols_tile_n::<1>(k, o, scale),
                2 => cols_tile_n::<2>(k, o, scale),
                3 => cols_tile_n::<3>(k, o, scale),
                _ => cols_tile_n::<4>(k, o, scale),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn cols_tile_n<const M: usize>(k: usize, o: Operands, scale: f32) {
        let Operands {
            x,
            xs,
            b,
            bs,
            y,
            ys,
            cols,
        } = o;
        let mut acc = [[_mm512_setzero_ps(); 4]; M];
        for c in (0..k).step_by(16) {
            let mask = lanes(k - c);
            // SAFETY (whole block): `cols` rows of `b` and `M` rows of `x`, masked to `k`.
            unsafe {
                let bv: [__m512; 4] = std::array::from_fn(|j| {
                    if j < cols {
                        _mm512_maskz_loadu_ps(mask, b.add(j * bs + c))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                for (i, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm512_maskz_loadu_ps(mask, x.add(i * xs + c));
                    for j in 0..4 {
                        acc[j] = _mm512_fmadd_ps(xv, bv[j], acc[j]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate().take(cols) {
                // SAFETY: row `i`, column `j < cols` of the tile.
                unsafe { *y.add(i * ys + j) = _mm512_reduce_add_ps(*a) * scale };
            }
        }
    }
}

/// Never called: [`supported`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    use super::Operands;

    pub(crate) unsafe fn rows_step(_: usize, _: usize, _: Operands, _: bool, _: f32) {
        unreachable!("small-m matmul kernels need AVX-512")
    }

    pub(crate) unsafe fn cols_tile(_: usize, _: usize, _: Operands, _: f32) {
        unreachable!("small-m matmul kernels need AVX-512")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, x: &[f32], b: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|l| x[i * k + l] * b(l, j)).sum::<f32>() * 0.5;
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    /// Odd sizes cover the masked tails of both kernels; `b` has padding columns.
    #[test]
    fn both_forms_match_the_naive_product() {
        if !supported() {
            return;
        }
        for (m, n, k) in [
            (1, 7, 5),
            (3, 64, 16),
            (4, 130, 37),
            (7, 200, 64),
            (16, 65, 100),
        ] {
            let x = values(m * k, 1);
            let pad = 3;
            let rows = values(k * (n + pad), 2); // (k, n) with row stride n + pad
            let cols = values(n * (k + pad), 3); // (n, k) with row stride k + pad
            let (xr, br, bc) = (
                Rows {
                    data: &x,
                    stride: k,
                },
                Rows {
                    data: &rows,
                    stride: n + pad,
                },
                Rows {
                    data: &cols,
                    stride: k + pad,
                },
            );
            let check = |run: &dyn Fn(Out), want: Vec<f32>, what: &str| {
                let mut y = vec![f32::NAN; m * n];
                run(Out {
                    data: &mut y,
                    stride: n,
                });
                let close = y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4);
                assert!(close, "{m}x{n}x{k} {what}");
            };
            for parallel in [false, true] {
                check(
                    &|y| times_rows((m, n, k), y, xr, br, 0.5, parallel),
                    naive(m, n, k, &x, |l, j| rows[l * (n + pad) + j]),
                    "rows",
                );
            }
            check(
                &|y| times_cols((m, n, k), y, xr, bc, 0.5),
                naive(m, n, k, &x, |l, j| cols[j * (k + pad) + l]),
                "cols",
            );
        }
    }
}
