#!/usr/bin/python3
"""gen_prune.py - golden pruning masks and Taylor scores for tests/test_prune.c
from PyTorch 1.13 (torch.nn.utils.prune).

Writes tests/data/prune/golden.txt: one array per line, "name n v0 v1 ...".
Run from the repo root: /usr/bin/python3 tests/gen/gen_prune.py
"""
import os
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

torch.manual_seed(0)
out = []


def put(name, t):
    v = t.detach().reshape(-1).double().tolist()
    out.append(name + " " + str(len(v)) + " " + " ".join("%.9g" % x for x in v))


class Net(nn.Module):
    # conv1 [6,2,3,3], fc1 [20,54], fc2 [10,20]: the layer order of the C test
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3)
        self.fc1 = nn.Linear(54, 20)
        self.fc2 = nn.Linear(20, 10)


def layers(m):
    return [(m.conv1, "weight"), (m.fc1, "weight"), (m.fc2, "weight")]


def make(ties):
    m = Net()
    with torch.no_grad():
        for mod, _ in layers(m):
            w = torch.rand(mod.weight.shape) * 2 - 1
            if ties:  # 8 magnitudes (no zeros): many equal |w|, so tie-breaking matters
                w = (torch.floor(w * 8) + 0.5) / 8
            mod.weight.copy_(w)
    return m


def masks(m):
    return torch.cat([mod.weight_mask.reshape(-1) for mod, _ in layers(m)])


for tag, ties in (("cont", False), ("ties", True)):
    base = make(ties)
    put(tag + "_w", torch.cat([mod.weight.reshape(-1) for mod, _ in layers(base)]))
    # global L1 over all three weights
    for amount, atag in ((0.3, "30"), (0.01, "1"), (0.75, "75")):
        m = make(False)
        m.load_state_dict(base.state_dict())
        prune.global_unstructured(layers(m), pruning_method=prune.L1Unstructured, amount=amount)
        put("%s_global%s" % (tag, atag), masks(m))
    # per layer L1 (0.0625 * 200 = 12.5 rounds half to even: 12)
    for amount, atag in ((0.5, "50"), (0.0625, "6")):
        m = make(False)
        m.load_state_dict(base.state_dict())
        for mod, name in layers(m):
            prune.l1_unstructured(mod, name, amount=amount)
        put("%s_layer%s" % (tag, atag), masks(m))

# structured: ln_structured over output channels (dim 0), L1 and L2, 50%
m = make(False)
put("ln_w", m.conv1.weight)
for n, ntag in ((1, "l1"), (2, "l2")):
    c = nn.Conv2d(2, 6, 3)
    with torch.no_grad():
        c.weight.copy_(m.conv1.weight)
    prune.ln_structured(c, "weight", amount=0.5, n=n, dim=0)
    put("ln_" + ntag, c.weight_mask.reshape(6, -1)[:, 0])

# Taylor scores: |w * dL/dw| summed over 2 calibration batches of 4
# (cross-entropy, mean over the batch) on Flatten -> fc1 [8,12] -> ReLU -> fc2 [3,8]
fc1 = nn.Linear(12, 8)
fc2 = nn.Linear(8, 3)
x = torch.rand(8, 1, 3, 4)
y = torch.tensor([0, 2, 1, 1, 0, 2, 2, 1])
put("ty_x", x)
put("ty_y", y)
put("ty_fc1_w", fc1.weight)
put("ty_fc1_b", fc1.bias)
put("ty_fc2_w", fc2.weight)
put("ty_fc2_b", fc2.bias)
s1 = torch.zeros_like(fc1.weight)
s2 = torch.zeros_like(fc2.weight)
for b in range(2):
    fc1.zero_grad()
    fc2.zero_grad()
    xb = x[b * 4:(b + 1) * 4].reshape(4, -1)
    loss = F.cross_entropy(fc2(F.relu(fc1(xb))), y[b * 4:(b + 1) * 4])
    loss.backward()
    s1 += (fc1.weight * fc1.weight.grad).abs().detach()
    s2 += (fc2.weight * fc2.weight.grad).abs().detach()
put("ty_s1", s1)
put("ty_s2", s2)

os.makedirs("tests/data/prune", exist_ok=True)
with open("tests/data/prune/golden.txt", "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote tests/data/prune/golden.txt (%d arrays)" % len(out))
