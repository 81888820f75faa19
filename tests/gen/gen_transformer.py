#!/usr/bin/python3
"""gen_transformer.py - a tiny GPT (2 blocks, d 32, 4 heads, GELU MLP, byte
vocabulary 128) trained for a few hundred steps on TinyShakespeare and
exported by PyTorch 1.13's ONNX exporter (opset 14: LayerNorm decomposed into
ReduceMean / Sub / Pow / Sqrt / Div, GELU into Erf, every nn.Linear a MatMul
with the weight [K,N] plus an Add on a 3-D activation) -- the graph a user
gets from torch.onnx.export of a transformer.  The tests quantize it with
shrink and compare with the f32 logits torch computed.

Run from the repository root:  /usr/bin/python3 tests/gen/gen_transformer.py
Needs ../shared/data/text/tinyshakespeare.txt.  Writes
tests/data/transformer/tiny_gpt.onnx and golden.bin:
  int32 T, int32 V, T int64 tokens (a batch of 1), T*V f32 logits.
"""
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "transformer")
TEXT = os.path.join(HERE, "..", "..", "..", "shared", "data", "text", "tinyshakespeare.txt")
V, D, H, L, T = 128, 32, 4, 2, 32


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.up, self.down = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.register_buffer("mask", torch.triu(torch.full((T, T), -1e9), 1))

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q = self.q(h).reshape(b, t, H, d // H).transpose(1, 2)
        k = self.k(h).reshape(b, t, H, d // H).transpose(1, 2)
        v = self.v(h).reshape(b, t, H, d // H).transpose(1, 2)
        a = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d // H) + self.mask[:t, :t]
        a = torch.matmul(F.softmax(a, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.pos = nn.Parameter(torch.randn(T, D) * 0.02)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.lnf = nn.LayerNorm(D)
        self.head = nn.Linear(D, V)

    def forward(self, idx):
        x = self.emb(idx) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.lnf(x))


data = torch.tensor([min(c, 127) for c in open(TEXT, "rb").read()], dtype=torch.long)
m = GPT()
opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
for step in range(600):
    ix = torch.randint(0, len(data) - T - 1, (32,))
    x = torch.stack([data[i:i + T] for i in ix])
    y = torch.stack([data[i + 1:i + T + 1] for i in ix])
    loss = F.cross_entropy(m(x).reshape(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0 or step == 599:
        print("step", step, "loss", float(loss))
m.eval()
os.makedirs(OUT, exist_ok=True)
tok = data[1000:1000 + T].reshape(1, T)
torch.onnx.export(m, tok, os.path.join(OUT, "tiny_gpt.onnx"), opset_version=14, input_names=["tokens"],
                  output_names=["logits"])
with torch.no_grad():
    logits = m(tok)
with open(os.path.join(OUT, "golden.bin"), "wb") as f:
    f.write(struct.pack("<ii", T, V))
    f.write(tok.numpy().astype("<i8").tobytes())
    f.write(logits.numpy().astype("<f4").tobytes())
print("wrote", OUT)
