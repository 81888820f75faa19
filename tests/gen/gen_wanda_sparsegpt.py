#!/usr/bin/python3
"""gen_wanda_sparsegpt.py - golden masks / weights for tests/test_prune_llm.c:
reference implementations of Wanda (Sun et al. 2023) and SparseGPT (Frantar
& Alistarh 2023) written from the papers, in float64 PyTorch 1.13.

Layer: W [ROWS, COLS] (a Linear / Gemm transB=1 weight), calibration inputs
X [N, COLS] with correlated features (X = Z A + small noise, Z of rank 16),
H = 2/N X^T X.  Wanda: score |W_ij| * ||X_j||_2, the floor(r * COLS) lowest of
each row pruned (stable sort: lower index first on ties); N:M: the M-N
lowest of every M.  SparseGPT: damped H (+0.01 mean diag), U = upper
Cholesky factor of H^-1, columns left to right in blocks of 128; mask per
block: w^2 / U_jj^2 <= its floor(r * numel)-th smallest (unstructured) or the
M-N lowest of each row's M columns at every M-th column (N:M); error
(w - q) / U_ii spread over the later columns with U's row i.

Writes tests/data/llm_prune/golden.txt ("name n v0 v1 ...").
Run from the repo root: /usr/bin/python3 tests/gen/gen_wanda_sparsegpt.py
"""
import torch

torch.manual_seed(0)
ROWS, COLS, N = 4, 136, 48
out = []


def put(name, t):
    v = t.detach().reshape(-1).double().tolist()
    out.append(name + " " + str(len(v)) + " " + " ".join("%.9g" % x for x in v))


W = (torch.rand(ROWS, COLS) * 2 - 1).float()
Z = torch.randn(N, 16)
A = torch.randn(16, COLS)
scale = torch.exp(torch.randn(COLS))  # features of very different size
X = ((Z @ A) * scale + 0.05 * torch.randn(N, COLS)).float()
put("w", W)
put("x", X)

Wd, Xd = W.double(), X.double()
H = 2.0 / N * Xd.T @ Xd


def wanda(W, X, ratio=0.5, n=0, m=0):
    xn = torch.sqrt((X * X).sum(0))
    s = W.abs() * xn.reshape(1, -1)
    mask = torch.zeros_like(W, dtype=torch.bool)
    if m:
        for c0 in range(0, W.shape[1], m):
            idx = torch.sort(s[:, c0:c0 + m], dim=1, stable=True)[1][:, :m - n]
            mask.scatter_(1, c0 + idx, True)
    else:
        k = int(W.shape[1] * ratio)
        idx = torch.sort(s, dim=1, stable=True)[1][:, :k]
        mask.scatter_(1, idx, True)
    Wp = W.clone()
    Wp[mask] = 0
    return Wp


def sparsegpt(W, H, ratio=0.5, n=0, m=0, bs=128, percdamp=0.01):
    W = W.clone()
    H = H.clone()
    C = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(C, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, C, bs):
        i2 = min(i1 + bs, C)
        cnt = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(U1)
        if m == 0:
            tmp = W1 ** 2 / d1.reshape(1, -1) ** 2
            th = torch.sort(tmp.flatten())[0][int(tmp.numel() * ratio)]
            mask1 = tmp <= th
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(cnt):
            w = W1[:, i]
            d = U1[i, i]
            if m and i % m == 0:
                tmp = W1[:, i:i + m] ** 2 / d1[i:i + m].reshape(1, -1) ** 2
                idx = torch.sort(tmp, dim=1, stable=True)[1][:, :m - n]
                mask1.scatter_(1, i + idx, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(U1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def recon(Wp):
    return float(((Xd @ (Wd - Wp).T) ** 2).sum())


res = {}
for tag, kw in (("u50", dict(ratio=0.5)), ("nm24", dict(n=2, m=4)), ("nm48", dict(n=4, m=8)),
                ("u70", dict(ratio=0.7))):
    a = wanda(Wd, Xd, **kw)
    b = sparsegpt(Wd, H, **kw)
    put("wanda_" + tag, a)
    put("sgpt_" + tag, b)
    res[tag] = (recon(a), recon(b))
# magnitude (per row, same count as Wanda) for the error comparison
k = int(COLS * 0.5)
idx = torch.sort(Wd.abs(), dim=1, stable=True)[1][:, :k]
Wm = Wd.clone()
Wm.scatter_(1, idx, 0.0)
put("recon_u50", torch.tensor([recon(Wm), res["u50"][0], res["u50"][1]]))

with open("tests/data/llm_prune/golden.txt", "w") as f:
    f.write("\n".join(out) + "\n")
print("reconstruction error ||X (W - W')^T||^2: magnitude %.4g, wanda %.4g, sparsegpt %.4g" %
      (recon(Wm), res["u50"][0], res["u50"][1]))
for t, (a, b) in res.items():
    print("%s: wanda %.4g sparsegpt %.4g" % (t, a, b))
