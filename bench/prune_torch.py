#!/usr/bin/python3
"""prune_torch.py - the peer of `shrink prune --global` (one-shot global L1,
no fine-tuning): rebuild the built-in `cnn` (src/train/models.c) in PyTorch
1.13 from an ONNX file's weights, prune it with
torch.nn.utils.prune.global_unstructured(L1Unstructured) over the same layers
(every Conv and the Linear, in node order) and evaluate it on the
Fashion-MNIST test set (/usr/share/datasets/fashion-mnist/t10k-*.gz).

With --shrink-model PRUNED.onnx (shrink's result for the same ratio) it also
compares the masks: the number of weights pruned by one and not the other.

Usage: /usr/bin/python3 bench/prune_torch.py MODEL.onnx --ratio 0.5 [--shrink-model P.onnx]
Prints one line: "torch_prune ratio R accuracy A mask_mismatches M" (M = -1
without --shrink-model).
"""
import argparse
import gzip
import struct
import sys

import numpy as np
import onnx
from onnx import numpy_helper
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

DATA = "/usr/share/datasets/fashion-mnist/"


def idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    magic, n = struct.unpack(">II", b[:8])
    if magic == 2051:
        r, c = struct.unpack(">II", b[8:16])
        return np.frombuffer(b, np.uint8, offset=16).reshape(n, 1, r, c)
    return np.frombuffer(b, np.uint8, offset=8)


class CBR(nn.Module):
    def __init__(self, cin, cout, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class CNN(nn.Module):
    """models.c build_cnn: layer1 (1->32) pool layer2 (32->64) pool,
    residual block res.a/res.b (64) + identity, relu, layer4 (64->128),
    global average pool, fc (128->10)."""

    def __init__(self):
        super().__init__()
        self.layer1 = CBR(1, 32)
        self.layer2 = CBR(32, 64)
        self.res_a = CBR(64, 64)
        self.res_b = CBR(64, 64, relu=False)
        self.layer4 = CBR(64, 128)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(self.layer1(x), 2)
        s = F.max_pool2d(self.layer2(x), 2)
        x = F.relu(self.res_b(self.res_a(s)) + s)
        x = self.layer4(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)

    def prunable(self):
        """(module, "weight") in shrink's node order"""
        return [(m.conv, "weight") for m in (self.layer1, self.layer2, self.res_a, self.res_b, self.layer4)] + [
            (self.fc, "weight")]


def onnx_weights(path):
    m = onnx.load(path)
    return {t.name: numpy_helper.to_array(t).copy() for t in m.graph.initializer}


def load(path):
    w = onnx_weights(path)
    net = CNN()
    names = {"layer1": net.layer1, "layer2": net.layer2, "res.a": net.res_a, "res.b": net.res_b, "layer4": net.layer4}
    sd = {}
    for pre, mod in names.items():
        attr = [k for k, v in net.named_children() if v is mod][0]
        sd[attr + ".conv.weight"] = w[pre + ".conv.weight"]
        for p in ("weight", "bias", "running_mean", "running_var"):
            sd[attr + ".bn." + p] = w[pre + ".bn." + p]
    sd["fc.weight"] = w["fc.weight"]
    sd["fc.bias"] = w["fc.bias"]
    missing = [k for k in net.state_dict() if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        sys.exit("prune_torch.py: %s lacks %s (not the built-in cnn?)" % (path, ", ".join(missing)))
    for k in list(net.state_dict()):
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()})
    return net.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ratio", type=float, required=True)
    ap.add_argument("--shrink-model")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = load(a.model)
    params = net.prunable()
    if a.ratio > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=a.ratio)
    x = torch.from_numpy(idx(DATA + "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(DATA + "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 500):
            correct += (net(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    acc = correct / len(y)
    mism = -1
    if a.shrink_model:
        sw = onnx_weights(a.shrink_model)
        names = ["layer1.conv.weight", "layer2.conv.weight", "res.a.conv.weight", "res.b.conv.weight",
                 "layer4.conv.weight", "fc.weight"]
        mism = 0
        for (mod, _), n in zip(params, names):
            tm = (getattr(mod, "weight_mask", torch.ones_like(mod.weight)) == 0).numpy()
            if n not in sw:
                sys.exit("prune_torch.py: %s has no dense '%s' (packed? compare an unpacked model)" % (a.shrink_model, n))
            sm = sw[n] == 0
            mism += int((tm != sm).sum())
    print("torch_prune ratio %g accuracy %.4f mask_mismatches %d" % (a.ratio, acc, mism))


if __name__ == "__main__":
    main()
