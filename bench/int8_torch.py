#!/usr/bin/env python3
"""int8_torch.py MODEL.onnx [options] - PyTorch 1.13 static int8 of shrink's
built-in `cnn` (src/train/models.c) with the weights of MODEL.onnx.

The architecture is rebuilt in torch (conv-BN-ReLU blocks, a residual block,
global average pooling, a linear classifier), the f32 weights are read from
the ONNX initializers by name (python3-onnx), the model is quantized with
eager-mode torch.ao.quantization (fuse conv+bn+relu, prepare, calibrate on
the first N images of the calibration set, convert) on the 'onednn' engine
(else 'x86' / 'fbgemm', whichever this build has), and batch-1 latency is
timed with torch.set_num_threads(T) for each T asked for.  Prints:
    engine NAME
    torch_f32_acc A / torch_int8_acc A       (top-1 on the evaluation set)
    torch_f32_b1_t{T}_ms X / torch_int8_b1_t{T}_ms X   (median of the runs)

Options: --calib N (images of fashion-mnist train used to calibrate, 256),
--calib-set train|test, --eval N (test images for accuracy, 10000; 0: skip),
--threads 1,2, --runs 300, --warmup 30, --reps 5 (median of rep medians).
"""
import argparse
import gzip
import os
import statistics
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn as nn
import torch.ao.quantization as tq

FMNIST = "/usr/share/datasets/fashion-mnist"


def load_images(split, n):
    pre = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FMNIST, pre + "-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(FMNIST, pre + "-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    if n:
        x, y = x[:n], y[:n]
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


class CBR(nn.Module):
    def __init__(self, cin, cout, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class CNN(nn.Module):
    """shrink's `cnn`: layer1 (1->32), pool, layer2 (32->64), pool, residual
    block res.a / res.b (64->64) + identity, ReLU, layer4 (64->128), GAP, fc."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.layer1 = CBR(1, 32)
        self.pool1 = nn.MaxPool2d(2)
        self.layer2 = CBR(32, 64)
        self.pool2 = nn.MaxPool2d(2)
        self.res_a = CBR(64, 64)
        self.res_b = CBR(64, 64, relu=False)
        self.add = nn.quantized.FloatFunctional()
        self.layer4 = CBR(64, 128)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.pool1(self.layer1(x))
        s = self.pool2(self.layer2(x))
        r = self.add.add_relu(self.res_b(self.res_a(s)), s)
        x = self.gap(self.layer4(r))
        x = self.fc(torch.flatten(x, 1))
        return self.dequant(x)


def load_weights(model, path):
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(path).graph.initializer}
    sd = model.state_dict()
    missing = []
    for k in sd:
        if k.endswith("num_batches_tracked"):
            continue
        onnx_name = k.replace("res_a.", "res.a.").replace("res_b.", "res.b.")
        if onnx_name not in inits:
            missing.append(onnx_name)
            continue
        t = inits[onnx_name]
        if t.shape != sd[k].shape:
            sys.exit("int8_torch: %s has shape %s in %s, expected %s" % (onnx_name, tuple(t.shape), path,
                                                                        tuple(sd[k].shape)))
        sd[k] = t
    if missing:
        sys.exit("int8_torch: %s lacks %s (is it shrink's cnn?)" % (path, ", ".join(missing[:5])))
    model.load_state_dict(sd)


def accuracy(model, x, y):
    with torch.inference_mode():
        correct = 0
        for i in range(0, len(x), 500):
            correct += (model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    return correct / len(x)


def latency_ms(model, x1, runs, warmup):
    with torch.inference_mode():
        for _ in range(warmup):
            model(x1)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x1)
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--calib-set", default="train", choices=["train", "test"])
    ap.add_argument("--eval", type=int, default=10000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("onednn", "x86", "fbgemm") if e in engines), None)
    if engine is None:
        sys.exit("int8_torch: no onednn/x86/fbgemm engine in torch %s (%s)" % (torch.__version__, engines))
    torch.backends.quantized.engine = engine
    print("engine", engine)
    f32 = CNN().eval()
    load_weights(f32, a.model)
    q = CNN().eval()
    q.load_state_dict(f32.state_dict())
    tq.fuse_modules(q, [["layer1.conv", "layer1.bn", "layer1.relu"], ["layer2.conv", "layer2.bn", "layer2.relu"],
                        ["res_a.conv", "res_a.bn", "res_a.relu"], ["res_b.conv", "res_b.bn"],
                        ["layer4.conv", "layer4.bn", "layer4.relu"]], inplace=True)
    q.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(q, inplace=True)
    xc, _ = load_images(a.calib_set, a.calib)
    with torch.inference_mode():
        for i in range(0, len(xc), 32):
            q(xc[i:i + 32])
    tq.convert(q, inplace=True)
    if a.eval:
        xt, yt = load_images("test", a.eval)
        print("torch_f32_acc %.4f" % accuracy(f32, xt, yt))
        print("torch_int8_acc %.4f" % accuracy(q, xt, yt))
    x1 = load_images("test", 1)[0]
    for t in [int(s) for s in a.threads.split(",") if s]:
        torch.set_num_threads(t)
        for name, m in (("f32", f32), ("int8", q)):
            meds = [latency_ms(m, x1, a.runs, a.warmup) for _ in range(a.reps)]
            print("torch_%s_b1_t%d_ms %.4f" % (name, t, statistics.median(meds)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
