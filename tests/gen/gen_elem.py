#!/usr/bin/python3
"""gen_elem.py - golden vectors for the elementwise and shape op families
(src/ops/elementwise.c, src/ops/shape.c), computed with PyTorch 1.13 (numpy
where torch has no direct equivalent, e.g. negative slice steps).

Run from anywhere:  /usr/bin/python3 tests/gen/gen_elem.py
Writes tests/data/elem/golden.txt, read by tests/test_ops_elem.c and
tests/test_ops_shape.c.

Format, one record per line:
  case <name> <op> <n_in> <n_out> [attr ...]
      attr: i:name=v1,v2,...  (ints)   f:name=v  (float)   s:name=text
  t <fmt> <ndim> <d0> ... <dk> : <v0> <v1> ...     (n_in input lines, then
      n_out output lines; fmt f32, i64 or i32; "t none" = omitted input)
Float inputs become graph inputs; integer inputs become initializers
(constants known at plan time, as PyTorch exports them).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "elem")
os.makedirs(OUT, exist_ok=True)
lines = []


def rnd(*shape, lo=-2.0, hi=2.0):
    return (torch.rand(tuple(shape), dtype=torch.float64) * (hi - lo) + lo).float()


def ten(t):
    if t is None:
        return "t none"
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if t.dtype == torch.float32:
        fmt, vals = "f32", ["%.9g" % v for v in t.reshape(-1).tolist()]
    elif t.dtype == torch.int64:
        fmt, vals = "i64", [str(v) for v in t.reshape(-1).tolist()]
    elif t.dtype == torch.int32:
        fmt, vals = "i32", [str(v) for v in t.reshape(-1).tolist()]
    else:
        raise ValueError(t.dtype)
    dims = [str(d) for d in t.shape]
    return "t %s %d %s : %s" % (fmt, len(dims), " ".join(dims), " ".join(vals))


def case(name, op, ins, outs, **attrs):
    toks = ["case", name, op, str(len(ins)), str(len(outs))]
    for k, v in attrs.items():
        if isinstance(v, str):
            toks.append("s:%s=%s" % (k, v))
        elif isinstance(v, float):
            toks.append("f:%s=%.9g" % (k, v))
        elif isinstance(v, (list, tuple)):
            toks.append("i:%s=%s" % (k, ",".join(str(int(x)) for x in v)))
        else:
            toks.append("i:%s=%d" % (k, int(v)))
    lines.append(" ".join(toks))
    for t in list(ins) + list(outs):
        lines.append(ten(t))


def i64(*v):
    return torch.tensor(v, dtype=torch.int64)


# ---- binary with broadcasting -------------------------------------------
binops = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
bshapes = {
    "same": ((2, 3, 4), (2, 3, 4)),
    "chan": ((2, 3, 4, 5), (3, 1, 1)),
    "scalar": ((2, 3, 4), ()),
    "scalar_left": ((), (3, 4)),
    "outer": ((3, 1), (1, 4)),
    "mid": ((2, 1, 4), (3, 1)),
    "row": ((5, 6), (6,)),
    "ones": ((1, 1), (1,)),
}
for opn, fn in binops.items():
    for sn, (sa, sb) in bshapes.items():
        a = rnd(*sa)
        b = rnd(*sb, lo=0.5, hi=2.0) if opn == "Div" else rnd(*sb)
        case("bin_%s_%s" % (opn.lower(), sn), opn, [a, b], [fn(a, b)])
# integer shape arithmetic
a, b = i64(6, 7, -9, 12), i64(4)
case("int_add", "Add", [a, b], [a + b])
case("int_mul", "Mul", [a, i64(2, 3, 1, -1)], [a * i64(2, 3, 1, -1)])
case("int_div", "Div", [a, b], [torch.div(a, b, rounding_mode="trunc")])
case("int_sub", "Sub", [i64(3, 4), i64(1)], [i64(2, 3)])
# Pow
x = rnd(2, 3, 4, lo=0.2, hi=2.0)
case("pow_sq", "Pow", [x, torch.tensor(2.0)], [x.pow(2.0)])
case("pow_sqrt", "Pow", [x, torch.tensor(0.5)], [x.pow(0.5)])
e = rnd(3, 1, lo=-1.5, hi=1.5)
case("pow_tensor", "Pow", [x, e], [torch.pow(x, e)])

# ---- unary -----------------------------------------------------------------
x = rnd(3, 4, 5, lo=-3.0, hi=3.0)
xp = rnd(3, 4, 5, lo=0.1, hi=3.0)
case("un_relu", "Relu", [x], [torch.relu(x)])
case("un_leaky", "LeakyRelu", [x], [F.leaky_relu(x, 0.1)], alpha=0.1)
case("un_leaky_default", "LeakyRelu", [x], [F.leaky_relu(x, 0.01)])
case("un_sigmoid", "Sigmoid", [x * 5], [torch.sigmoid(x * 5)])
case("un_tanh", "Tanh", [x], [torch.tanh(x)])
case("un_gelu", "Gelu", [x], [F.gelu(x)])
case("un_gelu_tanh", "Gelu", [x], [F.gelu(x, approximate="tanh")], approximate="tanh")
case("un_erf", "Erf", [x], [torch.erf(x)])
case("un_exp", "Exp", [x], [torch.exp(x)])
case("un_log", "Log", [xp], [torch.log(xp)])
case("un_sqrt", "Sqrt", [xp], [torch.sqrt(xp)])
case("un_neg", "Neg", [x], [-x])
case("un_abs", "Abs", [x], [torch.abs(x)])
case("un_reciprocal", "Reciprocal", [xp], [torch.reciprocal(xp)])
case("un_hardsigmoid", "HardSigmoid", [x], [torch.clamp(0.3 * x + 0.4, 0, 1)], alpha=0.3, beta=0.4)
case("un_hardswish", "HardSwish", [x * 2], [F.hardswish(x * 2)])
case("un_softplus", "Softplus", [x * 10], [F.softplus(x * 10)])
case("un_elu", "Elu", [x], [F.elu(x, 0.7)], alpha=0.7)
case("un_selu", "Selu", [x], [F.selu(x)])
case("un_softsign", "Softsign", [x], [F.softsign(x)])

# ---- softmax -------------------------------------------------------------------
x = rnd(2, 3, 4, lo=-4.0, hi=4.0)
case("sm_last", "Softmax", [x], [torch.softmax(x, -1)])
case("sm_axis1", "Softmax", [x], [torch.softmax(x, 1)], axis=1)
case("sm_axis0", "Softmax", [x], [torch.softmax(x, 0)], axis=0)
case("lsm_last", "LogSoftmax", [x], [torch.log_softmax(x, -1)])
case("lsm_axis1", "LogSoftmax", [x], [torch.log_softmax(x, 1)], axis=1)
# opset < 13: coerce to 2-D at axis (default 1)
case("sm_opset11", "Softmax", [x], [torch.softmax(x.reshape(2, 12), 1).reshape(2, 3, 4)], _opset=11)
case("lsm_opset11_axis2", "LogSoftmax", [x], [torch.log_softmax(x.reshape(6, 4), 1).reshape(2, 3, 4)],
     axis=2, _opset=11)
big = torch.tensor([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -1002.0]])
case("sm_large", "Softmax", [big], [torch.softmax(big, -1)])
case("lsm_large", "LogSoftmax", [big], [torch.log_softmax(big, -1)])

# ---- Clip ------------------------------------------------------------------------
x = rnd(3, 5, lo=-3.0, hi=3.0)
case("clip_inputs", "Clip", [x, torch.tensor(-1.0), torch.tensor(0.5)], [torch.clamp(x, -1.0, 0.5)])
case("clip_min_only", "Clip", [x, torch.tensor(0.0)], [torch.clamp(x, min=0.0)])
case("clip_max_only", "Clip", [x, None, torch.tensor(6.0 / 5)], [torch.clamp(x, max=1.2)])
case("clip_attrs", "Clip", [x], [torch.clamp(x, -0.5, 0.25)], min=-0.5, max=0.25)
case("clip_none", "Clip", [x], [x])

# ---- reductions --------------------------------------------------------------------
x = rnd(2, 3, 4, 5)
case("rmean_hw", "ReduceMean", [x], [x.mean((2, 3), keepdim=True)], axes=[2, 3])
case("rmean_last_nokeep", "ReduceMean", [x], [x.mean(-1)], axes=[-1], keepdims=0)
case("rmean_all", "ReduceMean", [x], [x.mean().reshape(1, 1, 1, 1)])
case("rsum_axis1", "ReduceSum", [x], [x.sum(1)], axes=[1], keepdims=0)
case("rsum_input_axes", "ReduceSum", [x, i64(0, 2)], [x.sum((0, 2), keepdim=True)])
case("rsum_noop", "ReduceSum", [x, torch.zeros(0, dtype=torch.int64)], [x], noop_with_empty_axes=1)
case("rsum_all_nokeep", "ReduceSum", [x], [x.sum()], keepdims=0)
case("rmax_last", "ReduceMax", [x], [x.amax(-1, keepdim=True)], axes=[-1])
case("rmax_mid", "ReduceMax", [x], [x.amax((1, 3))], axes=[1, 3], keepdims=0)
case("rmin_first", "ReduceMin", [x], [x.amin(0, keepdim=True)], axes=[0])

# ---- shape ops ------------------------------------------------------------------------
x = rnd(2, 3, 4, 5)
case("identity", "Identity", [x], [x])
case("dropout_infer", "Dropout", [x], [x])
case("flatten_1", "Flatten", [x], [x.reshape(2, 60)])
case("flatten_0", "Flatten", [x], [x.reshape(1, 120)], axis=0)
case("flatten_neg", "Flatten", [x], [x.reshape(24, 5)], axis=-1)
case("reshape_zero_neg", "Reshape", [x, i64(0, -1, 5)], [x.reshape(2, 12, 5)])
case("reshape_flat", "Reshape", [x, i64(-1)], [x.reshape(-1)])
case("reshape_allowzero", "Reshape", [rnd(0, 3), i64(3, 0)], [torch.zeros(3, 0)], allowzero=1)
case("transpose_nhwc", "Transpose", [x], [x.permute(0, 2, 3, 1)], perm=[0, 2, 3, 1])
case("transpose_default", "Transpose", [x], [x.permute(3, 2, 1, 0)])
y = rnd(2, 3)
case("transpose_2d", "Transpose", [y], [y.t()], perm=[1, 0])
a, b, c = rnd(2, 1, 4), rnd(2, 3, 4), rnd(2, 2, 4)
case("concat_axis1", "Concat", [a, b, c], [torch.cat([a, b, c], 1)], axis=1)
case("concat_neg", "Concat", [b, b], [torch.cat([b, b], -1)], axis=-1)
case("concat_i64", "Concat", [i64(2), i64(-1), i64(7, 8)], [i64(2, -1, 7, 8)], axis=0)
x4 = rnd(1, 2, 3, 4)
for mode, tm in (("constant", "constant"), ("reflect", "reflect"), ("edge", "replicate")):
    pads = i64(0, 0, 1, 2, 0, 0, 2, 1)  # [x1b, x2b, x3b, x4b, x1e, ...]
    ref = F.pad(x4, (2, 1, 1, 2), mode=tm) if tm != "constant" else F.pad(x4, (2, 1, 1, 2), value=0.5)
    ins = [x4, pads, torch.tensor(0.5)] if mode == "constant" else [x4, pads]
    case("pad_" + mode, "Pad", ins, [ref], mode=mode)
case("pad_crop", "Pad", [x4, i64(0, 0, -1, 1, 0, 0, 0, -2)], [F.pad(x4, (1, -2, -1, 0))])
case("pad_attr_opset2", "Pad", [x4], [F.pad(x4, (1, 1, 0, 0), value=-1.0)], pads=[0, 0, 0, 1, 0, 0, 0, 1], value=-1.0)
emb = rnd(10, 4)
idx = i64(3, 0, 9, 3, -1, 5).reshape(2, 3)
case("gather_embed", "Gather", [emb, idx], [emb[idx % 10]])
case("gather_axis1", "Gather", [x, i64(2, -3)], [x[:, [2, 0]]], axis=1)
case("gather_scalar_i64", "Gather", [i64(5, 6, 7), torch.tensor(1)], [torch.tensor(6)])
case("unsqueeze_attr", "Unsqueeze", [y], [y.reshape(1, 2, 1, 3)], axes=[0, 2])
case("unsqueeze_input", "Unsqueeze", [y, i64(-1)], [y.reshape(2, 3, 1)])
z = rnd(1, 3, 1, 2)
case("squeeze_all", "Squeeze", [z], [z.reshape(3, 2)])
case("squeeze_input", "Squeeze", [z, i64(-2)], [z.reshape(1, 3, 2)])
case("cast_f32_i64", "Cast", [torch.tensor([1.7, -2.7, 0.2, 3.0])], [i64(1, -2, 0, 3)], to=7)
case("cast_i64_f32", "Cast", [i64(4, -1, 9)], [torch.tensor([4.0, -1.0, 9.0])], to=1)
xn = x.numpy()
case("slice_basic", "Slice", [x, i64(1, 0), i64(3, 10), i64(1, 3), i64(1, 2)], [torch.from_numpy(xn[:, 1:3, :, 0:10:2].copy())])
case("slice_neg_step", "Slice", [x, i64(-1), i64(-1000), i64(2), i64(-2)], [torch.from_numpy(xn[:, :, ::-2].copy())])
case("slice_default_axes", "Slice", [y, i64(1, -2), i64(2, 100)], [y[1:2, -2:]])
case("slice_i64_shape", "Slice", [i64(2, 3, 4, 5), i64(1), i64(3)], [i64(3, 4)])
e = rnd(3, 1)
case("expand_bidir", "Expand", [e, i64(2, 1, 4)], [e.expand(2, 3, 4)])
case("expand_same", "Expand", [e, i64(3, 1)], [e])
case("shape_all", "Shape", [x], [i64(2, 3, 4, 5)])
case("shape_range", "Shape", [x], [i64(3, 4)], start=1, end=-1)
case("cos_zeros", "ConstantOfShape", [i64(2, 3)], [torch.zeros(2, 3)])
case("range_i64", "Range", [torch.tensor(10), torch.tensor(-2), torch.tensor(-3)], [torch.arange(10, -2, -3)])

with open(os.path.join(OUT, "golden.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("wrote %d lines to %s" % (len(lines), os.path.join(OUT, "golden.txt")))
