#!/usr/bin/python3
"""train_torch.py MODEL STEPS BATCH - PyTorch training throughput (images/s)
for the same built-in models as `shrink train` (mlp, lenet5, cnn) on
Fashion-MNIST, AdamW, 2 threads.  Prints one number: images/s.
Used by bench/bench_train.sh as the peer measurement."""
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
name, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
warm = 10

d = "/usr/share/datasets/fashion-mnist"
x = np.frombuffer(gzip.open(d + "/train-images-idx3-ubyte.gz").read()[16:], np.uint8)
y = np.frombuffer(gzip.open(d + "/train-labels-idx1-ubyte.gz").read()[8:], np.uint8)
x = torch.tensor(x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
y = torch.tensor(y.astype(np.int64))


def cbr(ci, co, k, relu=True):
    layers = [nn.Conv2d(ci, co, k, padding=k // 2, bias=False), nn.BatchNorm2d(co)]
    return nn.Sequential(*(layers + [nn.ReLU()] if relu else layers))


class Res(nn.Module):
    """The same network as shrink's built-in "cnn" (src/train/models.c)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(cbr(1, 32, 3), nn.MaxPool2d(2), cbr(32, 64, 3), nn.MaxPool2d(2))
        self.body = nn.Sequential(cbr(64, 64, 3), cbr(64, 64, 3, False))
        self.tail = nn.Sequential(cbr(64, 128, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))

    def forward(self, x):
        s = self.head(x)
        return self.tail(torch.relu(self.body(s) + s))


models = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                                 nn.Linear(100, 10)),
    "lenet5": lambda: nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                                    nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                                    nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)),
    "cnn": Res,
}
torch.manual_seed(1)
m = models[name]()
m.train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
lossf = nn.CrossEntropyLoss()
perm = torch.randperm(x.shape[0])
t0 = None
for s in range(warm + steps):
    if s == warm:
        t0 = time.perf_counter()
    idx = perm[(s * batch) % (x.shape[0] - batch):][:batch]
    xb, yb = x[idx], y[idx]
    opt.zero_grad()
    loss = lossf(m(xb), yb)
    loss.backward()
    opt.step()
dt = time.perf_counter() - t0
print("%.1f" % (steps * batch / dt))
