#!/usr/bin/python3
"""gen_prune_schedule.py - golden values for tests/test_prune_schedule.c from
PyTorch 1.13: fine-tuning a pruned network with torch.nn.utils.prune masks
(AdamW, decoupled weight decay) and L1-regularised training (SGD momentum).

Net: input [N,1,2,4] -> Flatten -> Linear(8,6) -> ReLU -> Linear(6,3), one
full batch of 16 items per step (the C test trains 3 epochs of one batch).
Writes tests/data/prune_schedule/golden.txt: one array per line,
"name n v0 v1 ...".  Run from the repo root:
    /usr/bin/python3 tests/gen/gen_prune_schedule.py
"""
import os
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

out = []


def put(name, t):
    v = t.detach().reshape(-1).double().tolist()
    out.append(name + " " + str(len(v)) + " " + " ".join("%.9g" % x for x in v))


torch.manual_seed(0)
X = torch.rand(16, 1, 2, 4)
Y = torch.arange(16) % 3
W1, B1 = torch.randn(6, 8) * 0.5, torch.randn(6) * 0.1
W2, B2 = torch.randn(3, 6) * 0.5, torch.randn(3) * 0.1
put("x", X)
put("y", Y)
put("w1", W1)
put("b1", B1)
put("w2", W2)
put("b2", B2)


def net():
    m = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        m[1].weight.copy_(W1)
        m[1].bias.copy_(B1)
        m[3].weight.copy_(W2)
        m[3].bias.copy_(B2)
    return m


# A: per-layer L1 50 % masks, then 3 AdamW steps (lr 0.05, weight decay 0.1
# on the weights only, as shrink decays rank >= 2 tensors)
m = net()
prune.l1_unstructured(m[1], "weight", amount=0.5)
prune.l1_unstructured(m[3], "weight", amount=0.5)
decay = [m[1].weight_orig, m[3].weight_orig]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                         {"params": [m[1].bias, m[3].bias], "weight_decay": 0.0}], lr=0.05)
for _ in range(3):
    opt.zero_grad()
    F.cross_entropy(m(X), Y).backward()
    opt.step()
# m[1].weight is recomputed at the next forward: read weight_orig * mask
put("adamw_mask_w1", m[1].weight_orig * m[1].weight_mask)
put("adamw_mask_b1", m[1].bias)
put("adamw_mask_w2", m[3].weight_orig * m[3].weight_mask)
put("adamw_mask_b2", m[3].bias)

# B: L1-regularised training: loss + 0.01 * (|W1|.sum() + |W2|.sum()), SGD
# momentum 0.9, lr 0.1, 3 steps
m = net()
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
for _ in range(3):
    opt.zero_grad()
    loss = F.cross_entropy(m(X), Y) + 0.01 * (m[1].weight.abs().sum() + m[3].weight.abs().sum())
    loss.backward()
    opt.step()
put("sgd_l1_w1", m[1].weight)
put("sgd_l1_b1", m[1].bias)
put("sgd_l1_w2", m[3].weight)
put("sgd_l1_b2", m[3].bias)

os.makedirs("tests/data/prune_schedule", exist_ok=True)
with open("tests/data/prune_schedule/golden.txt", "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote tests/data/prune_schedule/golden.txt (%d arrays)" % len(out))
