//! The one matrix product every CPU kernel calls, on the rayon pool the kernels already use.
//!
//! The `gemm` crate takes the parallelism per call: a product called from inside a rayon task
//! (one attention head, one shard of a batch) splits its work into tasks of the same pool,
//! which the calling thread runs itself while the other threads are busy, instead of handing
//! half of it to a second pool whose threads then compete with rayon's for the cores.

use gemm::Parallelism;

/// How a product may use threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// On the calling thread only (the caller already runs one task per core).
    One,
    /// Split over the rayon pool when large enough.
    Pool,
}

/// `C ← α·A·B + β·C` for `A` `m×k`, `B` `k×n`, `C` `m×n`, each given by its first element and
/// its row and column strides (in elements). With `β = 0`, `C` is only written.
///
/// # Safety
/// The pointers and strides must address valid `m×k`, `k×n` and `m×n` arrays for the whole
/// call, and `C` must not overlap `A` or `B` or be written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    threads: Threads,
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    (a, rsa, csa): (*const f32, isize, isize),
    (b, rsb, csb): (*const f32, isize, isize),
    beta: f32,
    (c, rsc, csc): (*mut f32, isize, isize),
) {
    let parallelism = match threads {
        Threads::One => Parallelism::None,
        Threads::Pool => Parallelism::Rayon(0),
    };
    // gemm computes `dst ← alpha·dst + beta·lhs·rhs`, reading dst only when asked to.
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            csc,
            rsc,
            beta != 0.0,
            a,
            csa,
            rsa,
            b,
            csb,
            rsb,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by its definition, in f64.
    fn naive(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k)
                    .map(|l| a[i * k + l] as f64 * b[l * n + j] as f64)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn strided_products_with_scale_and_accumulation_match_the_definition() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 2), (17, 33, 9), (70, 64, 130)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let expected = naive(&a, &b, (m, k, n));
            // B read transposed from a column-major copy; C written column-major, then
            // accumulated into with α = 0.5, β = 1.
            let b_columns: Vec<f32> = (0..k * n).map(|i| b[(i % k) * n + i / k]).collect();
            for threads in [Threads::One, Threads::Pool] {
                let mut c = vec![f32::NAN; m * n];
                unsafe {
                    sgemm(
                        threads,
                        (m, k, n),
                        1.0,
                        (a.as_ptr(), k as isize, 1),
                        (b_columns.as_ptr(), 1, k as isize),
                        0.0,
                        (c.as_mut_ptr(), 1, m as isize),
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let got = c[j * m + i] as f64;
                        assert!((got - expected[i * n + j]).abs() < 1e-4, "{m}×{k}×{n}");
                    }
                }
                let mut rows: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
                unsafe {
                    sgemm(
                        threads,
                        (m, k, n),
                        0.5,
                        (a.as_ptr(), k as isize, 1),
                        (b.as_ptr(), n as isize, 1),
                        1.0,
                        (rows.as_mut_ptr(), n as isize, 1),
                    );
                }
                for (i, (got, want)) in rows.iter().zip(&expected).enumerate() {
                    assert!((*got as f64 - (i as f64 + 0.5 * want)).abs() < 1e-3);
                }
            }
        }
    }
}
