#!/usr/bin/python3
"""gen_qlinear.py - golden vectors for the integer ops (QLinearConv, QGemm,
QLinearAdd, QLinearGlobalAveragePool, dynamic QGemm) computed with
PyTorch 1.13's quantized kernels (onednn engine, the x86 engine of Debian's
build; qnnpack for add and pooling).

Run from the repository root:  /usr/bin/python3 tests/gen/gen_qlinear.py
Writes tests/data/qlinear/<case>.bin and tests/data/qlinear/index.txt.

Case file format (read by tests/test_qlinear.c):
  one text line: "<op> <n_in> <tol> [attr ...]\\n", attrs as in gen_nn.py
     (i:name=v1,v2  f:name=v  s:name=text); tol: the largest allowed
     difference of an output element (in output units: quantization steps
     for u8 outputs: 0, torch and shrink agree exactly on these cases;
     absolute for f32 outputs).
  then n_in inputs and one expected output, each: int32 format (0 f32,
     3 i8, 4 u8, 5 i32; -1: omitted optional input), int32 ndim, int64
     dims[ndim], raw data; all little-endian.

Inputs are the integer tensors torch itself used (int_repr of the quantized
tensors), so integer paths are compared on identical operands; the int32
bias B = round(b / (x_scale * w_scale[c])) and torch gets the float bias
B * x_scale * w_scale[c], so both add the same bias.
"""
import os
import struct

import numpy as np
import torch

torch.manual_seed(0)
np.random.seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "qlinear")
os.makedirs(OUT, exist_ok=True)
cases = []
FMT = {np.float32: 0, np.int8: 3, np.uint8: 4, np.int32: 5}


def tensor_bytes(a):
    if a is None:
        return struct.pack("<i", -1)
    a = np.ascontiguousarray(a)
    code = FMT[a.dtype.type]
    return struct.pack("<ii", code, a.ndim) + struct.pack("<%dq" % a.ndim, *a.shape) + a.tobytes()


def write(name, op, ins, out, tol, attrs=None):
    toks = [op, str(len(ins)), repr(float(tol))]
    for k, v in (attrs or {}).items():
        if isinstance(v, str):
            toks.append("s:%s=%s" % (k, v))
        elif isinstance(v, float):
            toks.append("f:%s=%r" % (k, v))
        else:
            v = v if isinstance(v, (list, tuple)) else [v]
            toks.append("i:%s=%s" % (k, ",".join(str(int(x)) for x in v)))
    with open(os.path.join(OUT, name + ".bin"), "wb") as f:
        f.write((" ".join(toks) + "\n").encode())
        for a in ins:
            f.write(tensor_bytes(a))
        f.write(tensor_bytes(out))
    cases.append(name)


def f32(x):
    return np.asarray(x, dtype=np.float32)


def qconv(name, N, C, H, W, M, k, stride=1, pad=0, dil=1, groups=1, per_channel=True, bias=True, relu=False):
    torch.backends.quantized.engine = "onednn"
    x = torch.randn(N, C, H, W) * 1.5 + 0.3
    w = torch.randn(M, C // groups, k, k) * 0.2
    xs, xz = float(f32((x.max() - x.min()) / 255)), int(np.clip(np.round(-float(x.min()) / float(f32((x.max() - x.min()) / 255))), 0, 255))
    qx = torch.quantize_per_tensor(x, xs, xz, torch.quint8)
    if per_channel:
        ws = f32(w.abs().amax(dim=(1, 2, 3)).numpy() / 127)
        qw = torch.quantize_per_channel(w, torch.from_numpy(ws.astype(np.float64)), torch.zeros(M, dtype=torch.long), 0, torch.qint8)
    else:
        ws = f32([float(w.abs().max()) / 127] * M)
        qw = torch.quantize_per_tensor(w, float(ws[0]), 0, torch.qint8)
    bq = None
    bf = None
    if bias:
        b = torch.randn(M) * 0.5
        bq = np.round(b.numpy() / (np.float32(xs) * ws)).astype(np.int32)
        bf = torch.from_numpy((bq.astype(np.float32) * (np.float32(xs) * ws)).astype(np.float32))
    # output scale from the float result
    yf = torch.nn.functional.conv2d(qx.dequantize(), qw.dequantize(), bf, stride, pad, dil, groups)
    if relu:
        yf = torch.relu(yf)
    lo, hi = min(float(yf.min()), 0.0), max(float(yf.max()), 0.0)
    ys = float(f32((hi - lo) / 255))
    yz = int(np.clip(np.round(-lo / ys), 0, 255))
    packed = torch.ops.quantized.conv2d_prepack(qw, bf, [stride, stride], [pad, pad], [dil, dil], groups)
    fn = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
    qy = fn(qx, packed, ys, yz)
    ins = [qx.int_repr().numpy(), f32(xs), np.uint8(xz).reshape(()), qw.int_repr().numpy(),
           ws if per_channel else f32(ws[0]), np.zeros(M if per_channel else (), dtype=np.int8), f32(ys),
           np.uint8(yz).reshape(()), bq]
    if bq is None:
        ins = ins[:8]
    attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4, "dilations": [dil, dil],
             "group": groups}
    if relu:
        attrs["activation"] = "Relu"
    write(name, "QLinearConv", ins, qy.int_repr().numpy(), 0, attrs)


def qlinear(name, M, K, N, per_channel=True, bias=True, relu=False, nd=None):
    torch.backends.quantized.engine = "onednn"
    x = torch.randn(M, K) + 0.2
    if nd:
        x = x.reshape(*nd, K)
    w = torch.randn(N, K) * 0.1
    xs = float(f32((x.max() - x.min()) / 255))
    xz = int(np.clip(np.round(-float(x.min()) / xs), 0, 255))
    qx = torch.quantize_per_tensor(x, xs, xz, torch.quint8)
    if per_channel:
        ws = f32(w.abs().amax(dim=1).numpy() / 127)
        qw = torch.quantize_per_channel(w, torch.from_numpy(ws.astype(np.float64)), torch.zeros(N, dtype=torch.long), 0, torch.qint8)
    else:
        ws = f32([float(w.abs().max()) / 127] * N)
        qw = torch.quantize_per_tensor(w, float(ws[0]), 0, torch.qint8)
    bq = bf = None
    if bias:
        b = torch.randn(N) * 0.3
        bq = np.round(b.numpy() / (np.float32(xs) * ws)).astype(np.int32)
        bf = torch.from_numpy((bq.astype(np.float32) * (np.float32(xs) * ws)).astype(np.float32))
    yf = torch.nn.functional.linear(qx.dequantize(), qw.dequantize(), bf)
    if relu:
        yf = torch.relu(yf)
    lo, hi = min(float(yf.min()), 0.0), max(float(yf.max()), 0.0)
    ys = float(f32((hi - lo) / 255))
    yz = int(np.clip(np.round(-lo / ys), 0, 255))
    packed = torch.ops.quantized.linear_prepack(qw, bf)
    fn = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    qy = fn(qx, packed, ys, yz)
    ins = [qx.int_repr().numpy(), f32(xs), np.uint8(xz).reshape(()), qw.int_repr().numpy(),
           ws if per_channel else f32(ws[0]), np.zeros(N if per_channel else (), dtype=np.int8), bq, f32(ys),
           np.uint8(yz).reshape(())]
    attrs = {"transB": 1}
    if relu:
        attrs["activation"] = "Relu"
    write(name, "QGemm", ins, qy.int_repr().numpy(), 0, attrs)
    # the same layer with f32 output (no y_scale): dequantized result
    yd = torch.nn.functional.linear(qx.dequantize(), qw.dequantize(), bf)
    if relu:
        yd = torch.relu(yd)
    write(name + "_f32out", "QGemm", ins[:7], f32(yd.numpy()), 1e-4 * max(1.0, float(yd.abs().max())), attrs)


def qlinear_dynamic(name, M, K, N, nd=None):
    torch.backends.quantized.engine = "onednn"
    x = torch.randn(M, K) * 2 + 0.5
    if nd:
        x = x.reshape(*nd, K)
    w = torch.randn(N, K) * 0.1
    ws = f32(w.abs().amax(dim=1).numpy() / 127)
    qw = torch.quantize_per_channel(w, torch.from_numpy(ws.astype(np.float64)), torch.zeros(N, dtype=torch.long), 0, torch.qint8)
    b = torch.randn(N) * 0.3
    packed = torch.ops.quantized.linear_prepack(qw, b)
    y = torch.ops.quantized.linear_dynamic(x, packed, False)
    # tolerance: the activation quantization step times sum |w| (both quantize
    # x to u8 from its range, rounding may differ by one step per element)
    step = float((max(float(x.max()), 0) - min(float(x.min()), 0)) / 255)
    tol = 1.01 * step * float(qw.dequantize().abs().sum(dim=1).max())
    ins = [x.numpy(), None, None, qw.int_repr().numpy(), ws, np.zeros(N, dtype=np.int8), f32(b.numpy())]
    write(name, "QGemm", ins, f32(y.numpy()), tol, {"transB": 1})


def qadd(name, shape_a, shape_b):
    torch.backends.quantized.engine = "qnnpack"
    a = torch.randn(*shape_a)
    b = torch.randn(*shape_b) * 0.7 + 0.2
    def qp(t):
        s = float(f32((max(float(t.max()), 0) - min(float(t.min()), 0)) / 255))
        return s, int(np.clip(np.round(-min(float(t.min()), 0) / s), 0, 255))
    sa, za = qp(a)
    sb, zb = qp(b)
    sc, zc = qp(a + b)
    qa = torch.quantize_per_tensor(a, sa, za, torch.quint8)
    qb = torch.quantize_per_tensor(b, sb, zb, torch.quint8)
    qc = torch.ops.quantized.add(qa, qb, sc, zc)
    ins = [qa.int_repr().numpy(), f32(sa), np.uint8(za).reshape(()), qb.int_repr().numpy(), f32(sb),
           np.uint8(zb).reshape(()), f32(sc), np.uint8(zc).reshape(())]
    write(name, "QLinearAdd", ins, qc.int_repr().numpy(), 0)


def qgap(name, shape):
    x = torch.rand(*shape) * 3
    sx, zx = float(f32(3.0 / 255)), 0
    qx = torch.quantize_per_tensor(x, sx, zx, torch.quint8)
    sy, zy = float(f32(2.0 / 255)), 3
    # the mean of the dequantized input (float64), quantized once
    m = qx.dequantize().double().mean(dim=(2, 3), keepdim=True)
    qy = torch.quantize_per_tensor(m.float(), sy, zy, torch.quint8)
    ins = [qx.int_repr().numpy(), f32(sx), np.uint8(zx).reshape(()), f32(sy), np.uint8(zy).reshape(())]
    write(name, "QLinearGlobalAveragePool", ins, qy.int_repr().numpy(), 0)


qconv("conv3x3_pc_bias", 2, 4, 8, 8, 8, 3, pad=1)
qconv("conv3x3_pc_relu", 1, 16, 14, 14, 32, 3, pad=1, relu=True)
qconv("conv_first_c1", 2, 1, 28, 28, 16, 3, pad=1, relu=True)
qconv("conv5x5_s2_pt_nobias", 1, 3, 11, 11, 5, 5, stride=2, pad=2, per_channel=False, bias=False)
qconv("conv1x1", 2, 24, 5, 5, 40, 1)
qconv("conv_depthwise", 2, 8, 9, 9, 8, 3, pad=1, groups=8)
qconv("conv_grouped", 1, 8, 7, 7, 12, 3, pad=1, groups=2)
qconv("conv_dilated", 1, 6, 10, 10, 10, 3, pad=2, dil=2)
qconv("conv_wide", 1, 32, 7, 7, 96, 3, pad=1, relu=True)
qlinear("linear_pc_bias_relu", 3, 20, 10, relu=True)
qlinear("linear_pt_nobias", 5, 70, 33, per_channel=False, bias=False)
qlinear("linear_big", 9, 300, 130)
qlinear("linear_3d", 6, 48, 17, nd=(2, 3))
qlinear_dynamic("linear_dynamic", 4, 64, 24)
qlinear_dynamic("linear_dynamic_3d", 6, 40, 12, nd=(3, 2))
qadd("add_same", (2, 4, 5, 5), (2, 4, 5, 5))
qadd("add_bcast", (2, 3, 4), (3, 1))
qgap("gap", (2, 5, 6, 6))

with open(os.path.join(OUT, "index.txt"), "w") as f:
    f.write("\n".join(cases) + "\n")
print("wrote %d cases to %s" % (len(cases), OUT))
