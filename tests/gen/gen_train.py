#!/usr/bin/python3
"""gen_train.py - golden values for tests/test_train.c from PyTorch 1.13.

Writes tests/data/train/golden.txt: one array per line, "name n v0 v1 ...".
Run: /usr/bin/python3 tests/gen/gen_train.py
"""
import os
import torch
import torch.nn.functional as F

torch.manual_seed(0)
out = []


def put(name, t):
    v = t.detach().reshape(-1).double().tolist()
    out.append(name + " " + str(len(v)) + " " + " ".join("%.9g" % x for x in v))


# cross-entropy, label smoothing 0.1, [4,5]
x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
y = torch.tensor([1, 0, 4, 2])
put("xent_x", x)
put("xent_y", y)
for eps, tag in ((0.0, "xent"), (0.1, "xent_ls")):
    x.grad = None
    loss = F.cross_entropy(x, y, label_smoothing=eps)
    loss.backward()
    put(tag + "_loss", loss.reshape(1))
    put(tag + "_grad", x.grad)

# language model: [2,3,6] logits, next-token targets, one ignored (-1)
x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
y = torch.tensor([[1, 5, 0], [3, -1, 2]])
loss = F.cross_entropy(x.reshape(-1, 6), y.reshape(-1), ignore_index=-1)
loss.backward()
put("lm_x", x)
put("lm_y", y)
put("lm_loss", loss.reshape(1))
put("lm_grad", x.grad)

# KL with temperature 2 (Hinton): T^2 * kl_div(log_softmax(s/T), softmax(t/T), batchmean)
s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
t = torch.randn(3, 4, dtype=torch.float64)
T = 2.0
loss = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
loss.backward()
put("kl_s", s)
put("kl_t", t)
put("kl_loss", loss.reshape(1))
put("kl_grad", s.grad)

# MSE
a = torch.randn(7, dtype=torch.float64, requires_grad=True)
b = torch.randn(7, dtype=torch.float64)
loss = F.mse_loss(a, b)
loss.backward()
put("mse_a", a)
put("mse_b", b)
put("mse_loss", loss.reshape(1))
put("mse_grad", a.grad)

# optimizers: a [2,3] weight (decayed) and a [3] bias (not), 3 steps with
# fixed gradient sequences
w0 = torch.randn(2, 3)
b0 = torch.randn(3)
gw = [torch.randn(2, 3) for _ in range(3)]
gb = [torch.randn(3) for _ in range(3)]
put("opt_w0", w0)
put("opt_b0", b0)
for k in range(3):
    put("opt_gw%d" % k, gw[k])
    put("opt_gb%d" % k, gb[k])


def run(tag, make):
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = make([{"params": [w]}, {"params": [b], "weight_decay": 0.0}])
    for k in range(3):
        w.grad = gw[k].clone()
        b.grad = gb[k].clone()
        opt.step()
    put(tag + "_w", w)
    put(tag + "_b", b)


run("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01))
run("nesterov", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
run("adamw", lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1))

# schedules over 10 steps, lr 0.1
def lrs(make):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sch = make(opt)
    v = []
    for _ in range(10):
        v.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return torch.tensor(v)


put("onecycle_lr", lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
    o, max_lr=0.1, total_steps=10, pct_start=0.3, anneal_strategy="cos", cycle_momentum=False)))
put("cosine_lr", lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0)))
# step: 2 steps per epoch, step_size 2 epochs, gamma 0.5 -> StepLR(step_size=4 steps)
put("step_lr", lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5)))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "train", "golden.txt")
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", path)
