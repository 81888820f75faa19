#!/usr/bin/python3
"""gen_gptq.py - reference GPTQ codes for tests/test_gptq.c.

An independent numpy implementation of GPTQ (Frantar et al. 2022,
Algorithm 1: columns in order, error / [H^-1]_cc^(chol) spread to later
columns, lazy batch updates per block, static groups whose parameters are
chosen by round-to-nearest on the updated weights when the group starts),
written from the paper.  The group parameters follow shrink's formats
(src/core/quant_formats.c): f16-rounded scales, q4_0 / q3_0 sign-max
symmetric, q4_1 / q2_1 min-max asymmetric, computed in float32.

Writes tests/data/gptq/gptq_ref.txt:
  rows cols group block damp
  W (rows*cols float32)          H (cols*cols float64)
  per format: name, codes (rows*cols ints), d m per group (float32)
Run: /usr/bin/python3 tests/gen/gen_gptq.py
"""
import os

import numpy as np

f32 = np.float32


def h(x):
    return f32(np.float16(f32(x)))


def params(fmt, x):
    x = x.astype(f32)
    lo, hi = f32(x.min()), f32(x.max())
    mx = x[np.argmax(np.abs(x))]  # first largest magnitude, with sign
    if fmt == "q4_0":
        return h(mx / f32(-8)), f32(0)
    if fmt == "q3_0":
        return h(mx / f32(-4)), f32(0)
    if fmt == "q4_1":
        return h((hi - lo) / f32(15)), h(lo)
    if fmt == "q2_1":
        return h((hi - lo) / f32(3)), h(lo)
    raise ValueError(fmt)


def qvalue(fmt, d, m, x):
    x = f32(x)
    idv = f32(1) / d if d != 0 else f32(0)
    if fmt in ("q4_0", "q3_0"):
        off, top = (8, 15) if fmt == "q4_0" else (4, 7)
        q = int(min(max(np.floor(f32(x * idv + f32(off)) + f32(0.5)), 0), top))
        return q, f32(d * f32(q - off))
    top = 15 if fmt == "q4_1" else 3
    q = int(min(max(np.floor(f32(f32(x - m) * idv) + f32(0.5)), 0), top))
    return q, f32(f32(d * f32(q)) + m)


def gptq(W, H, fmt, group, block, damp):
    rows, cols = W.shape
    W = W.astype(np.float64).copy()
    H = H.copy()
    dead = np.diag(H) <= 0
    H[dead, :] = 0
    H[:, dead] = 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * np.mean(np.diag(H)) * np.eye(cols)
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: H^-1 = U^T U
    codes = np.zeros((rows, cols), dtype=np.int64)
    P = np.zeros((rows, cols // group, 2), dtype=f32)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        E = np.zeros((rows, i2 - i1))
        for i in range(i1, i2):
            for r in range(rows):
                if i % group == 0:
                    P[r, i // group] = params(fmt, W[r, i:i + group].astype(f32))
                d, m = P[r, i // group]
                q, v = qvalue(fmt, d, m, f32(W[r, i]))
                codes[r, i] = q
                e = (W[r, i] - float(v)) / U[i, i]
                E[r, i - i1] = e
                W[r, i + 1:i2] -= e * U[i, i + 1:i2]
        W[:, i2:] -= E @ U[i1:i2, i2:]
    return codes, P


def main():
    rng = np.random.default_rng(3)
    rows, cols, group, block, damp = 6, 64, 32, 32, 0.01
    n = 256
    A = rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols)
    X = (rng.standard_normal((n, cols)) @ A).astype(f32)
    W = (rng.standard_normal((rows, cols)) * 0.1).astype(f32)
    Xd = X.astype(np.float64)
    H = 2.0 / n * Xd.T @ Xd
    out = os.path.join(os.path.dirname(__file__), "..", "data", "gptq", "gptq_ref.txt")
    with open(out, "w") as f:
        f.write(f"{rows} {cols} {group} {block} {damp}\n")
        f.write(" ".join(f"{v:.9g}" for v in W.ravel()) + "\n")
        f.write(" ".join(f"{v:.17g}" for v in H.ravel()) + "\n")
        for fmt in ("q4_0", "q4_1", "q3_0", "q2_1"):
            codes, P = gptq(W, H, fmt, group, block, damp)
            f.write(fmt + "\n")
            f.write(" ".join(str(int(c)) for c in codes.ravel()) + "\n")
            f.write(" ".join(f"{v:.9g}" for v in P.ravel()) + "\n")


if __name__ == "__main__":
    main()
