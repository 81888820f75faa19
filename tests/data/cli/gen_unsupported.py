#!/usr/bin/env python3
"""Writes unsupported_ops.onnx: a valid ONNX model (opset 17) whose graph uses
ops shrink does not implement (Unique, and FancyOp from domain com.example),
for tests/cli/bad_input.sh.  Protobuf is encoded by hand: no onnx package needed.

    python3 tests/data/cli/gen_unsupported.py tests/data/cli/unsupported_ops.onnx
"""
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_int(num, v):
    return varint(num << 3) + varint(v)


def value_info(name, dims):
    shape = b"".join(field_bytes(1, field_int(1, d)) for d in dims)       # TensorShapeProto.dim.dim_value
    tensor = field_int(1, 1) + field_bytes(2, shape)                       # elem_type FLOAT, shape
    return field_bytes(1, name) + field_bytes(2, field_bytes(1, tensor))   # name, type.tensor_type


def node(inputs, outputs, name, op, domain=""):
    b = b"".join(field_bytes(1, i) for i in inputs) + b"".join(field_bytes(2, o) for o in outputs)
    b += field_bytes(3, name) + field_bytes(4, op)
    if domain:
        b += field_bytes(7, domain)
    return b


graph = (field_bytes(1, node(["x"], ["h"], "relu_ok", "Relu"))
         + field_bytes(1, node(["h"], ["u"], "unique_1", "Unique"))
         + field_bytes(1, node(["u"], ["y"], "fancy_1", "FancyOp", "com.example"))
         + field_bytes(2, "unsupported")
         + field_bytes(11, value_info("x", [1, 8]))
         + field_bytes(12, value_info("y", [1, 8])))
opset = field_bytes(1, "") + field_int(2, 17)
opset2 = field_bytes(1, "com.example") + field_int(2, 1)
model = (field_int(1, 8) + field_bytes(2, "shrink-tests") + field_bytes(7, graph)
         + field_bytes(8, opset) + field_bytes(8, opset2))
with open(sys.argv[1] if len(sys.argv) > 1 else "unsupported_ops.onnx", "wb") as f:
    f.write(model)
