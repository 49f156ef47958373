#!/usr/bin/env python3
"""A NumPy client of the farm's `inference` kind with binary tensors (docs/JOBS.md, "Binary tensors").

    tensor-client.py request MODEL.safetensors ROWS SEED   prints an inference payload: float32 inputs as
                                                           base64 of ndarray.tobytes(), outputFormat "binary"
    tensor-client.py check MODEL.safetensors CONFIG.json ROWS SEED < result.json
                                                           checks the result's logits against NumPy's forward pass
                                                           (atol 1e-5); exit status 0 when they agree

Only NumPy and the standard library: the safetensors header is read by hand (8-byte length, JSON, raw bytes).
"""
import base64
import json
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    body = raw[8 + length:]
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtypes[entry["dtype"]]).reshape(entry["shape"])
    return tensors


def inputs(rows, seed):
    return np.random.default_rng(seed).uniform(-2, 10, size=(rows, 64)).astype(np.float32)


def tensor(array):
    """The farm's tensor object for a 2-D float32 or float16 array."""
    array = np.ascontiguousarray(array)
    dtype = {np.dtype("float32"): "float32", np.dtype("float16"): "float16"}[array.dtype]
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": dtype, "shape": list(array.shape), "data": base64.b64encode(data).decode("ascii")}


def from_tensor(obj):
    values = np.frombuffer(base64.b64decode(obj["data"]), dtype="<f4")
    return values.reshape(obj["shape"])


def forward(tensors, config, x):
    h = x.astype(np.float32)
    standardization = config.get("input_standardization")
    if standardization:
        h = (h - tensors[standardization["mean_tensor"]]) / tensors[standardization["std_tensor"]]
    for layer in config["layers"]:
        h = h @ tensors[layer["weight"]].T + tensors[layer["bias"]]
        if layer["activation"] == "relu":
            h = np.maximum(h, 0)
    return h


def main():
    mode = sys.argv[1]
    if mode == "request":
        rows, seed = int(sys.argv[3]), int(sys.argv[4])
        payload = {"model": "numpy-mlp", "inputs": tensor(inputs(rows, seed)), "outputFormat": "binary",
                   "returnProbabilities": True}
        print(json.dumps(payload))
    elif mode == "check":
        tensors = load_safetensors(sys.argv[2])
        with open(sys.argv[3]) as f:
            config = json.load(f)
        rows, seed = int(sys.argv[4]), int(sys.argv[5])
        result = json.load(sys.stdin)
        expected = forward(tensors, config, inputs(rows, seed))
        logits = from_tensor(result["logits"])
        assert logits.shape == expected.shape, (logits.shape, expected.shape)
        worst = float(np.max(np.abs(logits - expected)))
        probabilities = from_tensor(result["probabilities"])
        z = expected - expected.max(axis=1, keepdims=True)
        softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        worst_p = float(np.max(np.abs(probabilities - softmax)))
        agree = bool(np.all(np.argmax(expected, axis=1) == np.array(result["predictions"])))
        print(json.dumps({"maxAbsDiff": worst, "maxAbsDiffProbabilities": worst_p, "predictionsAgree": agree}))
        sys.exit(0 if worst <= 1e-5 and worst_p <= 1e-5 and agree else 1)
    else:
        sys.exit("usage: tensor-client.py request|check ...")


if __name__ == "__main__":
    main()
