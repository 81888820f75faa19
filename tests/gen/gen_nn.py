#!/usr/bin/python3
"""gen_nn.py - golden vectors for the nn op family (Conv, Gemm, MatMul, pools,
BatchNormalization, LayerNormalization) computed with PyTorch 1.13.

Run from the repository root:  /usr/bin/python3 tests/gen/gen_nn.py
Writes tests/data/nn/<case>.bin and tests/data/nn/index.txt.

Case file format (read by tests/test_ops_nn.c):
  one text line: "<op> <n_in> <n_out> <train> [attr ...]\n", each attr being
     i:name=v1,v2,...   (ints)   f:name=v   (float)   s:name=text  (string)
  then n_in + n_out tensors, each: int32 ndim (-1: omitted optional input),
     int64 dims[ndim], float32 data[prod(dims)]; all little-endian.
  train=1: the node runs in a training program (BatchNormalization batch
  statistics); the outputs after Y are then the updated running mean and var.
"""
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "nn")
os.makedirs(OUT, exist_ok=True)
cases = []


def rnd(*shape):
    return torch.randn(*shape, dtype=torch.float64).float()


def write(name, op, ins, outs, attrs=None, train=0):
    toks = [op, str(len(ins)), str(len(outs)), str(train)]
    for k, v in (attrs or {}).items():
        if isinstance(v, str):
            toks.append("s:%s=%s" % (k, v))
        elif isinstance(v, float):
            toks.append("f:%s=%r" % (k, v))
        elif isinstance(v, (list, tuple)):
            toks.append("i:%s=%s" % (k, ",".join(str(int(x)) for x in v)))
        else:
            toks.append("i:%s=%d" % (k, v))
    buf = bytearray((" ".join(toks) + "\n").encode())
    for t in list(ins) + list(outs):
        if t is None:
            buf += struct.pack("<i", -1)
            continue
        a = t.detach().numpy().astype("<f4") if isinstance(t, torch.Tensor) else np.asarray(t, "<f4")
        buf += struct.pack("<i", a.ndim)
        buf += struct.pack("<%dq" % a.ndim, *a.shape)
        buf += a.tobytes()
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write(buf)
    cases.append(name)


def same_pads(insz, k, s, d, lower):
    pads_b, pads_e = [], []
    for i, kk, ss, dd in zip(insz, k, s, d):
        out = (i + ss - 1) // ss
        tot = max(0, (out - 1) * ss + (kk - 1) * dd + 1 - i)
        b = tot - tot // 2 if lower else tot // 2
        pads_b.append(b)
        pads_e.append(tot - b)
    return pads_b, pads_e


def conv_case(name, xs, ws, bias=True, strides=None, pads=None, dil=None, group=1, auto_pad=None, relu=False):
    x, w = rnd(*xs), rnd(*ws) * 0.5
    b = rnd(ws[0]) if bias else None
    nsp = len(xs) - 2
    s = strides or [1] * nsp
    d = dil or [1] * nsp
    attrs = {}
    if auto_pad:
        attrs["auto_pad"] = auto_pad
        if auto_pad == "VALID":
            pb, pe = [0] * nsp, [0] * nsp
        else:
            pb, pe = same_pads(xs[2:], ws[2:], s, d, auto_pad == "SAME_LOWER")
    else:
        p = pads or [0] * (2 * nsp)
        pb, pe = p[:nsp], p[nsp:]
        if pads:
            attrs["pads"] = pads
    if strides:
        attrs["strides"] = strides
    if dil:
        attrs["dilations"] = dil
    if group != 1:
        attrs["group"] = group
    attrs["kernel_shape"] = list(ws[2:])
    tp = []
    for i in reversed(range(nsp)):
        tp += [pb[i], pe[i]]
    xp = F.pad(x, tp)
    conv = F.conv1d if nsp == 1 else F.conv2d
    y = conv(xp, w, b, stride=s, dilation=d, groups=group)
    if relu:  # shrink extension: activation fused into Conv
        attrs["activation"] = "Relu"
        y = F.relu(y)
    write(name, "Conv", [x, w] + ([b] if bias else []), [y], attrs)


conv_case("conv_basic_pad1", [1, 3, 7, 7], [4, 3, 3, 3], pads=[1, 1, 1, 1])
conv_case("conv_stride2_odd", [2, 3, 9, 8], [5, 3, 3, 3], bias=False, strides=[2, 2], pads=[1, 1, 1, 1])
conv_case("conv_dilation", [1, 2, 10, 9], [3, 2, 3, 2], dil=[2, 2], pads=[2, 1, 2, 1])
conv_case("conv_groups", [2, 4, 6, 6], [6, 2, 3, 3], group=2, pads=[1, 1, 1, 1])
conv_case("conv_depthwise_s2", [1, 4, 7, 7], [4, 1, 3, 3], group=4, strides=[2, 2], pads=[1, 1, 1, 1])
conv_case("conv_depthwise_mult", [2, 3, 6, 5], [6, 1, 3, 3], group=3, dil=[1, 2], pads=[0, 2, 1, 1])
conv_case("conv_1x1", [2, 5, 4, 3], [7, 5, 1, 1])
conv_case("conv_1x1_groups", [1, 4, 3, 5], [6, 4 // 2, 1, 1], group=2)
conv_case("conv_1x1_stride2", [1, 4, 5, 5], [3, 4, 1, 1], strides=[2, 2])
conv_case("conv_asym_pads", [1, 2, 5, 6], [3, 2, 3, 3], strides=[2, 1], pads=[0, 1, 2, 1])
conv_case("conv_same_upper", [1, 2, 7, 6], [3, 2, 3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
conv_case("conv_same_lower", [1, 2, 7, 6], [3, 2, 4, 3], strides=[2, 2], auto_pad="SAME_LOWER")
conv_case("conv_valid", [1, 2, 7, 6], [3, 2, 3, 3], strides=[2, 2], auto_pad="VALID")
conv_case("conv_1d", [2, 3, 11], [4, 3, 3], strides=[2], pads=[1, 1], dil=[2])
conv_case("conv_group_stride_dil", [1, 6, 11, 11], [6, 3, 3, 3], group=2, strides=[2, 2], dil=[2, 2], pads=[2, 2, 2, 2])
conv_case("conv_batch3_big", [3, 8, 12, 12], [16, 8, 3, 3], pads=[1, 1, 1, 1])
# stride-1 convs with >= 4 input channels per group take the direct (AVX2) path
conv_case("conv_direct_dil_asym", [2, 5, 9, 10], [6, 5, 3, 2], dil=[2, 1], pads=[1, 0, 2, 1])
conv_case("conv_direct_groups", [1, 8, 7, 6], [10, 4, 3, 3], group=2, pads=[1, 1, 1, 1])
conv_case("conv_direct_1d", [2, 6, 13], [5, 6, 5], pads=[2, 2])
conv_case("conv_direct_5x5", [1, 4, 9, 9], [4, 4, 5, 5])
conv_case("conv_direct_same", [1, 7, 5, 8], [9, 7, 3, 3], auto_pad="SAME_LOWER")
conv_case("conv_relu_direct", [2, 4, 6, 7], [5, 4, 3, 3], pads=[1, 1, 1, 1], relu=True)
conv_case("conv_relu_im2col", [1, 3, 7, 7], [4, 3, 3, 3], strides=[2, 2], pads=[1, 1, 1, 1], relu=True)
conv_case("conv_relu_depthwise", [1, 3, 6, 6], [3, 1, 3, 3], group=3, pads=[1, 1, 1, 1], relu=True)
conv_case("conv_relu_1x1", [2, 4, 3, 3], [5, 4, 1, 1], relu=True)

# Gemm
def gemm_case(name, a, b, c, alpha=1.0, beta=1.0, tA=0, tB=0):
    A, B = rnd(*a), rnd(*b)
    C = rnd(*c) if c is not None else None
    opA = A.transpose(0, 1) if tA else A
    opB = B.transpose(0, 1) if tB else B
    Y = alpha * torch.matmul(opA, opB)
    if C is not None:
        Y = Y + beta * C
    attrs = {}
    if alpha != 1.0:
        attrs["alpha"] = alpha
    if beta != 1.0:
        attrs["beta"] = beta
    if tA:
        attrs["transA"] = 1
    if tB:
        attrs["transB"] = 1
    write(name, "Gemm", [A, B] + ([C] if C is not None else []), [Y], attrs)


gemm_case("gemm_basic", [3, 4], [4, 5], [5])
gemm_case("gemm_trans", [4, 3], [5, 4], [3, 5], alpha=0.5, beta=2.0, tA=1, tB=1)
gemm_case("gemm_transA", [4, 3], [4, 5], [3, 1], tA=1)
gemm_case("gemm_transB_scalarC", [3, 4], [5, 4], [1], beta=0.25, tB=1)
gemm_case("gemm_noC", [2, 7], [7, 3], None, alpha=1.5)
gemm_case("gemm_rank3", [2, 3, 4], [4, 5], [5])


def mm_case(name, a, b):
    A, B = rnd(*a), rnd(*b)
    write(name, "MatMul", [A, B], [torch.matmul(A, B)])


mm_case("matmul_2d", [3, 4], [4, 5])
mm_case("matmul_3d_2d", [2, 3, 4], [4, 5])
mm_case("matmul_1d_3d", [4], [2, 4, 5])
mm_case("matmul_bcast", [2, 1, 3, 4], [3, 4, 2])
mm_case("matmul_3d_1d", [2, 3, 4], [4])
mm_case("matmul_1d_1d", [4], [4])
mm_case("matmul_2d_3d", [3, 4], [2, 4, 5])


def spaced(*shape):
    # distinct values so that max pooling has no ties
    n = int(np.prod(shape))
    v = torch.randperm(n).double() / n * 4 - 2 + torch.rand(n, dtype=torch.float64) * 0.5 / n
    return v.float().reshape(*shape)


def maxpool_case(name, xs, k, s=None, p=None, d=None, ceil=0):
    x = spaced(*xs)
    nsp = len(xs) - 2
    attrs = {"kernel_shape": k}
    if s:
        attrs["strides"] = s
    if p:
        attrs["pads"] = p
    if d:
        attrs["dilations"] = d
    if ceil:
        attrs["ceil_mode"] = 1
    pool = F.max_pool1d if nsp == 1 else F.max_pool2d
    y = pool(x, k, s or k if s else 1, (p or [0] * (2 * nsp))[:nsp], d or 1, bool(ceil))
    write(name, "MaxPool", [x], [y], attrs)


def avgpool_case(name, xs, k, s=None, p=None, ceil=0, cip=0):
    x = rnd(*xs)
    nsp = len(xs) - 2
    attrs = {"kernel_shape": k}
    if s:
        attrs["strides"] = s
    if p:
        attrs["pads"] = p
    if ceil:
        attrs["ceil_mode"] = 1
    if cip:
        attrs["count_include_pad"] = 1
    pool = F.avg_pool1d if nsp == 1 else F.avg_pool2d
    y = pool(x, k, s if s else 1, (p or [0] * (2 * nsp))[:nsp], bool(ceil), bool(cip))
    write(name, "AveragePool", [x], [y], attrs)


maxpool_case("maxpool_k3s2p1", [1, 2, 7, 7], [3, 3], [2, 2], [1, 1, 1, 1])
maxpool_case("maxpool_ceil", [1, 1, 6, 6], [3, 3], [2, 2], ceil=1)
maxpool_case("maxpool_ceil_pad", [2, 2, 7, 8], [3, 2], [2, 2], [1, 1, 1, 1], ceil=1)
maxpool_case("maxpool_dilation", [1, 2, 8, 8], [2, 2], [1, 1], d=[2, 2])
maxpool_case("maxpool_2x2", [2, 3, 8, 6], [2, 2], [2, 2])
maxpool_case("maxpool_2x2_odd", [1, 2, 7, 5], [2, 2], [2, 2])
maxpool_case("maxpool_1d", [2, 3, 9], [3], [2])
# 3-D pooling and MaxPool's Indices output (flat index into the whole input)
x = spaced(1, 2, 5, 6, 7)
write("maxpool_3d", "MaxPool", [x], [F.max_pool3d(x, [2, 3, 2], [2, 2, 1], [1, 1, 0])],
      {"kernel_shape": [2, 3, 2], "strides": [2, 2, 1], "pads": [1, 1, 0, 1, 1, 0]})
x = rnd(2, 1, 5, 4, 6)
write("avgpool_3d", "AveragePool", [x], [F.avg_pool3d(x, [3, 2, 3], [1, 2, 2], [1, 0, 1], False, False)],
      {"kernel_shape": [3, 2, 3], "strides": [1, 2, 2], "pads": [1, 0, 1, 1, 0, 1]})
x = spaced(2, 3, 7, 6)
y, idx = F.max_pool2d(x, [3, 3], [2, 2], [1, 1], return_indices=True)
plane = torch.arange(6).reshape(2, 3, 1, 1) * 7 * 6
write("maxpool_indices", "MaxPool", [x], [y, (idx + plane).double()],
      {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
avgpool_case("avgpool_k3s2p1", [1, 2, 7, 7], [3, 3], [2, 2], [1, 1, 1, 1])
avgpool_case("avgpool_k3s2p1_cip", [1, 2, 7, 7], [3, 3], [2, 2], [1, 1, 1, 1], cip=1)
avgpool_case("avgpool_ceil", [1, 2, 6, 7], [3, 3], [2, 2], ceil=1)
avgpool_case("avgpool_ceil_pad_cip", [2, 1, 7, 8], [3, 2], [2, 2], [1, 1, 1, 1], ceil=1, cip=1)
avgpool_case("avgpool_1d", [2, 3, 9], [3], [2], [1, 1])
x = rnd(2, 3, 5, 4)
write("globalavgpool", "GlobalAveragePool", [x], [x.mean(dim=(2, 3), keepdim=True)])
x = spaced(2, 3, 5, 4)
write("globalmaxpool", "GlobalMaxPool", [x], [x.amax(dim=(2, 3), keepdim=True)])

# BatchNormalization
def bn_case(name, xs, train, eps=1e-5, momentum=0.9):
    C = xs[1]
    x, sc, b = rnd(*xs) * 2 + 0.5, rnd(C), rnd(C)
    rm, rv = rnd(C) * 0.1, torch.rand(C, dtype=torch.float64).float() + 0.5
    attrs = {"epsilon": eps, "momentum": momentum}
    rm2, rv2 = rm.clone(), rv.clone()
    y = F.batch_norm(x, rm2, rv2, sc, b, training=bool(train), momentum=1 - momentum, eps=eps)
    outs = [y] + ([rm2, rv2] if train else [])
    write(name, "BatchNormalization", [x, sc, b, rm, rv], outs, attrs, train=train)


bn_case("bn_infer", [2, 3, 4, 5], 0)
bn_case("bn_infer_2d", [5, 4], 0, eps=1e-3)
bn_case("bn_train", [3, 4, 3, 3], 1)
bn_case("bn_train_2d", [6, 3], 1, eps=1e-3, momentum=0.8)

# LayerNormalization (outputs Y, Mean, InvStdDev)
def ln_case(name, xs, axis, bias=True, eps=1e-5):
    x = rnd(*xs) * 1.5 + 0.3
    ax = axis % len(xs)
    ns = xs[ax:]
    sc = rnd(*ns)
    b = rnd(*ns) if bias else None
    dims = tuple(range(ax, len(xs)))
    xd = x.double()
    mean = xd.mean(dim=dims, keepdim=True)
    var = ((xd - mean) ** 2).mean(dim=dims, keepdim=True)
    inv = 1.0 / torch.sqrt(var + eps)
    y = F.layer_norm(x, ns, sc, b, eps)
    attrs = {"axis": axis}
    if eps != 1e-5:
        attrs["epsilon"] = eps
    write(name, "LayerNormalization", [x, sc] + ([b] if bias else []), [y, mean.float(), inv.float()], attrs)


ln_case("ln_last", [2, 3, 5], -1)
ln_case("ln_axis1", [2, 3, 5], 1, eps=1e-3)
ln_case("ln_nobias", [4, 7], -1, bias=False)

with open(os.path.join(OUT, "index.txt"), "w") as f:
    f.write("\n".join(cases) + "\n")
print("wrote %d cases to %s" % (len(cases), os.path.normpath(OUT)))
