#!/usr/bin/python3
"""gen_qat.py - golden values for tests/test_qat.c from PyTorch 1.13.

Writes tests/data/qat/golden.txt: one array per line, "name n v0 v1 ...".
FakeQuant = torch._fake_quantize_learnable_per_channel_affine (weights:
symmetric narrow 4-bit, axis 0, per channel) and
torch._fake_quantize_learnable_per_tensor_affine (activations: u8 with a
zero point), forward and the gradients of L = sum(y * r) for x and scale
(grad_factor g).  Inputs are float32; x avoids rounding boundaries.
Run: /usr/bin/python3 tests/gen/gen_qat.py
"""
import os

import torch

torch.manual_seed(0)
out = []


def put(name, t):
    v = t.detach().reshape(-1).double().tolist()
    out.append(name + " " + str(len(v)) + " " + " ".join("%.9g" % x for x in v))


def away(x, s):
    # move x/s away from .5 boundaries (torch and C round the same there,
    # but keep the test robust to 1-ulp differences)
    v = x / s
    f = v - torch.floor(v)
    bad = (f - 0.5).abs() < 0.02
    return torch.where(bad, x + 0.05 * s, x)


# per channel: w [4, 3, 2, 2], 4-bit symmetric narrow range [-7, 7]
w = torch.randn(4, 3, 2, 2) * 0.5
s = torch.tensor([0.05, 0.08, 0.11, 0.03])
w = away(w, s.view(4, 1, 1, 1))
r = torch.randn(4, 3, 2, 2)
g = 0.37
wt = w.clone().requires_grad_(True)
st = s.clone().requires_grad_(True)
zp = torch.zeros(4)
y = torch._fake_quantize_learnable_per_channel_affine(wt, st, zp, 0, -7, 7, g)
(y * r).sum().backward()
put("pc_x", w)
put("pc_s", s)
put("pc_r", r)
put("pc_y", y)
put("pc_dx", wt.grad)
put("pc_ds", st.grad)

# per tensor: activations [2, 5, 3], u8 [0, 255], zero point 37
x = torch.randn(2, 5, 3) * 2.0
s1 = torch.tensor([0.021])
x = away(x, s1)
x[0, 0, 0] = 10.0   # clipped above
x[1, 4, 2] = -5.0   # clipped below
r1 = torch.randn(2, 5, 3)
xt = x.clone().requires_grad_(True)
st1 = s1.clone().requires_grad_(True)
z1 = torch.tensor([37.0])
y1 = torch._fake_quantize_learnable_per_tensor_affine(xt, st1, z1, 0, 255, 1.0)
(y1 * r1).sum().backward()
put("pt_x", x)
put("pt_s", s1)
put("pt_r", r1)
put("pt_y", y1)
put("pt_dx", xt.grad)
put("pt_ds", st1.grad)

d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "qat")
os.makedirs(d, exist_ok=True)
with open(os.path.join(d, "golden.txt"), "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", os.path.join(d, "golden.txt"))
