#!/usr/bin/python3
"""gen_llm.py - golden values for tests/test_llm.c from PyTorch 1.13.

Writes tests/data/llm/golden.txt: one array per line, "name n v0 v1 ...".
RMSNorm, RoPE (llama2.c model.py: rotate pairs (2i, 2i+1) within each head,
freq theta^(-2i/hs), positions pos..pos+T-1) and grouped-query causal
attention (scale 1/sqrt(hs)), each with the gradients of L = sum(y * r).
Run: /usr/bin/python3 tests/gen/gen_llm.py
"""
import math
import os

import torch

torch.manual_seed(0)
out = []
D = torch.float64


def put(name, t):
    v = t.detach().reshape(-1).double().tolist()
    out.append(name + " " + str(len(v)) + " " + " ".join("%.10g" % x for x in v))


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, hs, pos, theta=10000.0):
    B, T, C = x.shape
    xs = x.reshape(B, T, C // hs, hs // 2, 2)
    freqs = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=D) / hs))
    t = torch.arange(pos, pos + T, dtype=D)
    ang = torch.outer(t, freqs)  # [T, hs/2]
    c = torch.cos(ang)[None, :, None, :]
    s = torch.sin(ang)[None, :, None, :]
    x0, x1 = xs[..., 0], xs[..., 1]
    y = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1)
    return y.reshape(B, T, C)


def attention(q, k, v, H, KV, causal=True):
    B, T, C = q.shape
    hs = C // H
    q = q.reshape(B, T, H, hs).transpose(1, 2)
    k = k.reshape(B, T, KV, hs).transpose(1, 2)
    v = v.reshape(B, T, KV, hs).transpose(1, 2)
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(hs)
    if causal:
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        s = s.masked_fill(mask, float("-inf"))
    a = torch.softmax(s, -1)
    y = a @ v
    return y.transpose(1, 2).reshape(B, T, C)


# RMSNorm [2,3,8], eps 1e-5
x = torch.randn(2, 3, 8, dtype=D, requires_grad=True)
w = torch.randn(8, dtype=D, requires_grad=True)
r = torch.randn(2, 3, 8, dtype=D)
y = rmsnorm(x, w, 1e-5)
(y * r).sum().backward()
put("rms_x", x), put("rms_w", w), put("rms_r", r), put("rms_y", y)
put("rms_dx", x.grad), put("rms_dw", w.grad)

# RoPE [2,4,16], head_size 8, at pos 0 and pos 5
x = torch.randn(2, 4, 16, dtype=D, requires_grad=True)
r = torch.randn(2, 4, 16, dtype=D)
put("rope_x", x), put("rope_r", r)
for pos in (0, 5):
    x.grad = None
    y = rope(x, 8, pos)
    (y * r).sum().backward()
    put("rope_y_p%d" % pos, y)
    put("rope_dx_p%d" % pos, x.grad)

# GQA causal attention: B 2, T 5, 4 query heads, 2 kv heads, hs 4
H, KV, hs, T = 4, 2, 4, 5
q = torch.randn(2, T, H * hs, dtype=D, requires_grad=True)
k = torch.randn(2, T, KV * hs, dtype=D, requires_grad=True)
v = torch.randn(2, T, KV * hs, dtype=D, requires_grad=True)
r = torch.randn(2, T, H * hs, dtype=D)
y = attention(q, k, v, H, KV)
(y * r).sum().backward()
put("att_q", q), put("att_k", k), put("att_v", v), put("att_r", r), put("att_y", y)
put("att_dq", q.grad), put("att_dk", k.grad), put("att_dv", v.grad)
# non-causal, same inputs
y = attention(q, k, v, H, KV, causal=False)
put("att_nc_y", y)

# SiluMul
a = torch.randn(3, 7, dtype=D)
b = torch.randn(3, 7, dtype=D)
put("sm_a", a), put("sm_b", b), put("sm_y", torch.nn.functional.silu(a) * b)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "llm", "golden.txt")
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", path, len(out), "arrays")

# Tokenizer golden (needs ../shared): llama2.c's encode(), ported literally.
import struct

tok_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "models",
                        "stories260K", "tok512.bin")
if os.path.exists(tok_path):
    raw = open(tok_path, "rb").read()
    off = 4
    vocab, scores = [], []
    for i in range(512):
        sc, ln = struct.unpack_from("<fi", raw, off)
        off += 8
        vocab.append(raw[off:off + ln])
        scores.append(sc)
        off += ln
    lookup = {}
    for i, p in enumerate(vocab):
        lookup.setdefault(p, i)

    def encode(text):
        b = text.encode("utf-8")
        toks = [1]
        if b:
            toks.append(lookup[b" "])
        i = 0
        while i < len(b):
            j = i + 1
            while j < len(b) and j - i < 4 and (b[j] & 0xC0) == 0x80:
                j += 1
            ch = b[i:j]
            if ch in lookup:
                toks.append(lookup[ch])
            else:
                toks.extend(x + 3 for x in ch)
            i = j
        while True:
            best, bi, bid = -1e10, -1, -1
            for k in range(1, len(toks) - 1):
                m = vocab[toks[k]] + vocab[toks[k + 1]]
                if m in lookup and scores[lookup[m]] > best:
                    best, bi, bid = scores[lookup[m]], k, lookup[m]
            if bi < 0:
                break
            toks[bi:bi + 2] = [bid]
        return toks

    texts = ["Once upon a time, there was a little girl named Lily.",
             "Hello  world!\nNew line\ttab",
             "caf\u00e9 na\u00efve \u2713 \u65e5\u672c \U0001F600",
             "The quick brown fox jumps over the lazy dog. 1234567890 <|endoftext|>",
             "Tom and Sue went to the park. They played on the swings and slides."]
    lines = []
    for t in texts:
        lines.append(t.encode("utf-8").hex() + "\t" + " ".join(str(x) for x in encode(t)))
    tp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "llm", "tok_golden.txt")
    with open(tp, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", tp)
