#!/usr/bin/env python3
"""Reference values for tests/test_calibrate.c (numpy only; run from the repo root):

    python3 tests/gen/gen_calib.py

Writes tests/data/calib/heavy.f32 (8192 heavy-tailed f32 samples, little
endian) and tests/data/calib/expected.txt with
  - numpy percentiles of those samples (linear interpolation), and
  - TensorRT's KL-divergence threshold (in bins) of a fixed synthetic 2048-bin
    histogram of |x|, computed by the reference implementation below.

The entropy algorithm (TensorRT, "8-bit inference with TensorRT", 2017;
pytorch-quantization's _compute_amax_entropy): for i = 128 .. nbins:
  P = hist[:i] with the outliers sum(hist[i:]) added to P[i-1];
  Q = hist[:i] merged into 128 bins of i // 128 source bins each (the last
      merged bin also takes the i % 128 remainder), each merged count spread
      evenly over its non-empty source bins (empty source bins stay 0);
  KL(P/sum P || Q/sum Q), infinite when Q is 0 where P is not;
the threshold is the first i with the smallest KL.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "calib")


def synthetic_hist(n=2048):
    """The fixed histogram also built by test_calibrate.c (same formula)."""
    h = np.zeros(n, dtype=np.float64)
    for b in range(n):
        v = np.floor(5000.0 * np.exp(-b / 90.0)) + (3.0 if b % 13 == 0 and b < 1000 else 0.0)
        if 1200 <= b < 1300:
            v = 0.0
        if b in (1500, 1777, 2040):
            v = 2.0
        h[b] = v
    return h


def entropy_bins(hist, target=128):
    n = len(hist)
    best_kl, best_i = np.inf, n
    for i in range(target, n + 1):
        p = hist[:i].astype(np.float64).copy()
        p[i - 1] += hist[i:].sum()
        m = i // target
        q = np.zeros(i)
        for j in range(target):
            s = j * m
            e = i if j == target - 1 else s + m
            seg = hist[s:e]
            nz = np.count_nonzero(seg)
            if nz:
                q[s:e] = np.where(seg != 0, seg.sum() / nz, 0.0)
        p = p / p.sum()
        q = q / q.sum()
        mask = p > 0
        if np.any(q[mask] == 0):
            continue
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i, best_kl


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1234)
    # heavy tailed (Student t, 3 degrees of freedom), shifted: both signs
    x = (rng.standard_t(3, size=8192) * 0.5 + 0.3).astype(np.float32)
    x.astype("<f4").tofile(os.path.join(OUT, "heavy.f32"))
    lines = []
    for p in (99.0, 99.9, 99.99):
        lo, hi = np.percentile(x.astype(np.float64), [100.0 - p, p])
        lines.append("percentile %.2f %.9g %.9g" % (p, lo, hi))
    lines.append("min %.9g" % float(x.min()))
    lines.append("max %.9g" % float(x.max()))
    i, kl = entropy_bins(synthetic_hist())
    lines.append("entropy_bins %d %.9g" % (i, kl))
    i256, kl256 = entropy_bins(synthetic_hist(), 256)
    lines.append("entropy_bins_256 %d %.9g" % (i256, kl256))
    # the same on a histogram without a long tail (threshold at the end)
    h2 = np.ones(300)
    i2, kl2 = entropy_bins(h2)
    lines.append("entropy_bins_flat300 %d %.9g" % (i2, kl2))
    with open(os.path.join(OUT, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
