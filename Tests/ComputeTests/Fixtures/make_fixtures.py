#!/usr/bin/env python3
"""Writes the small fixture files used by ComputeTests.

Run from anywhere: python3 Tests/ComputeTests/Fixtures/make_fixtures.py
Needs numpy and safetensors (pip install safetensors). Python is NOT a build or
test dependency: the generated files are committed next to this script.
Everything is seeded, so re-running reproduces the same files.
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20240611)


def path(name):
    return os.path.join(HERE, name)


def linear_init(out_f, in_f):
    """PyTorch nn.Linear default init: U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / np.sqrt(in_f)
    w = rng.uniform(-bound, bound, size=(out_f, in_f)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(out_f,)).astype(np.float32)
    return w, b


def act(name, x):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "gelu":
        from math import erf
        return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))
    if name == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return x


def forward64(tensors, layers, x, mean=None, std=None):
    """Reference forward pass in float64 on the float32-stored parameters."""
    h = x.astype(np.float64)
    if mean is not None:
        h = (h - mean.astype(np.float64)) / std.astype(np.float64)
    for layer in layers:
        w = tensors[layer["weight"]].astype(np.float64)
        h = h @ w.T
        if layer.get("bias"):
            h = h + tensors[layer["bias"]].astype(np.float64)
        h = act(layer["activation"], h)
    return h


# 1. A PyTorch-style Linear stack 64 -> 32 -> 10 (nn.Sequential names), with a
#    standard scaler stored as tensors and free-form __metadata__.
w0, b0 = linear_init(32, 64)
w2, b2 = linear_init(10, 32)
mean = rng.uniform(0, 8, size=64).astype(np.float32)
scale = rng.uniform(1, 5, size=64).astype(np.float32)
mlp = {"net.0.weight": w0, "net.0.bias": b0, "net.2.weight": w2, "net.2.bias": b2,
       "scaler.mean": mean, "scaler.scale": scale}
save_file(mlp, path("mlp_64_32_10.safetensors"),
          metadata={"format": "pt", "source": "make_fixtures.py", "architecture": "64-32-10 relu"})
config = {
    "layers": [
        {"weight": "net.0.weight", "bias": "net.0.bias", "activation": "relu"},
        {"weight": "net.2.weight", "bias": "net.2.bias", "activation": "none"},
    ],
    "input_standardization": {"mean_tensor": "scaler.mean", "std_tensor": "scaler.scale"},
}
with open(path("mlp_64_32_10.config.json"), "w") as f:
    json.dump(config, f, indent=1)
x = rng.uniform(0, 16, size=(6, 64)).astype(np.float32)
y = forward64(mlp, config["layers"], x, mean, scale)
with open(path("mlp_64_32_10.expected.json"), "w") as f:
    json.dump({"inputs": x.astype(np.float64).tolist(), "outputs": y.tolist()}, f)

# 2. Every activation: 8 -(gelu)-> 16 -(tanh)-> 12 -(sigmoid)-> 6 -(softmax)-> 4,
#    inline standardisation, no bias on the third layer.
t = {}
sizes = [8, 16, 12, 6, 4]
acts = ["gelu", "tanh", "sigmoid", "softmax"]
layers = []
for i in range(4):
    w, b = linear_init(sizes[i + 1], sizes[i])
    t[f"l{i}.w"] = w
    entry = {"weight": f"l{i}.w", "activation": acts[i]}
    if i != 2:
        t[f"l{i}.b"] = b
        entry["bias"] = f"l{i}.b"
    layers.append(entry)
save_file(t, path("mlp_activations.safetensors"), metadata={"note": "activation coverage"})
m2 = rng.normal(0, 1, size=8).astype(np.float32)
s2 = rng.uniform(0.5, 2, size=8).astype(np.float32)
config2 = {"layers": layers, "input_standardization": {"mean": m2.tolist(), "std": s2.tolist()}}
with open(path("mlp_activations.config.json"), "w") as f:
    json.dump(config2, f, indent=1)
x2 = rng.normal(0, 2, size=(5, 8)).astype(np.float32)
y2 = forward64(t, layers, x2, m2, s2)
with open(path("mlp_activations.expected.json"), "w") as f:
    json.dump({"inputs": x2.astype(np.float64).tolist(), "outputs": y2.tolist()}, f)

# 3. dtype coverage: F64 (read-only, converted), and an unsupported I16 tensor.
save_file({"a": np.arange(6, dtype=np.float64).reshape(2, 3) / 4.0,
           "h": (np.arange(4, dtype=np.float16) - 1.5)},
          path("dtypes_f64_f16.safetensors"))
save_file({"ok": np.ones(3, dtype=np.float32), "bad": np.arange(4, dtype=np.int16)},
          path("unsupported_i16.safetensors"))

# 4. .npy files.
np.save(path("npy_f32_2d.npy"), np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5)
np.save(path("npy_f16_1d.npy"), np.array([0.5, -2.0, 65504.0, 1e-3], dtype=np.float16))
np.save(path("npy_f64_2d.npy"), np.array([[1.25, -3.5], [1e10, 0.0]], dtype=np.float64))
np.save(path("npy_i32_2d.npy"), np.array([[1, -2, 3], [4, 5, -6]], dtype=np.int32))
np.save(path("npy_i64_1d.npy"), np.array([7, -8, 9], dtype=np.int64))
np.save(path("npy_fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
with open(path("npy_v2_f32.npy"), "wb") as f:
    np.lib.format.write_array(f, np.arange(10, dtype=np.float32).reshape(5, 2) - 3, version=(2, 0))

# 5. Statistics reference: 300 x 5 correlated float32 data (one column skewed).
n = 300
z = rng.normal(size=(n, 5))
mix = np.array([[2.0, 0.0, 0.0, 0.0, 0.0],
                [1.5, 0.5, 0.0, 0.0, 0.0],
                [0.0, 0.3, 1.0, 0.0, 0.0],
                [-0.7, 0.0, 0.2, 0.4, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.1]])
data = (z @ mix.T + np.array([10.0, -5.0, 0.0, 3.0, 100.0])).astype(np.float32)
data[:, 4] = np.exp(data[:, 4] - 100.0).astype(np.float32) * 3.0
np.save(path("stats_data.npy"), data)
d = data.astype(np.float64)
qs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
cov = np.cov(d, rowvar=False, ddof=1)
evals, evecs = np.linalg.eigh(cov)
order = np.argsort(evals)[::-1]
evals, evecs = evals[order], evecs[:, order]
comps = evecs.T
for i in range(comps.shape[0]):  # sign convention: largest |entry| positive
    j = np.argmax(np.abs(comps[i]))
    if comps[i, j] < 0:
        comps[i] = -comps[i]
hist_counts, hist_edges = np.histogram(d[:, 0], bins=10)
stats = {
    "rows": n, "columns": 5,
    "mean": d.mean(axis=0).tolist(),
    "std_ddof1": d.std(axis=0, ddof=1).tolist(),
    "min": d.min(axis=0).tolist(), "max": d.max(axis=0).tolist(),
    "quantile_levels": qs,
    "quantiles": [np.quantile(d[:, c], qs).tolist() for c in range(5)],
    "hist_col0_counts": hist_counts.tolist(), "hist_col0_edges": hist_edges.tolist(),
    "cov": cov.tolist(), "corr": np.corrcoef(d, rowvar=False).tolist(),
    "pca_k": 3,
    "pca_components": comps[:3].tolist(),
    "pca_explained_variance": evals[:3].tolist(),
    "pca_explained_variance_ratio": (evals[:3] / evals.sum()).tolist(),
}
with open(path("stats_expected.json"), "w") as f:
    json.dump(stats, f, indent=1)

# 6. CSV files: a small labelled table and a ragged one.
with open(path("small.csv"), "w") as f:
    f.write("a,species,b,c\n1.5,0,2,-3\n\n4,2,5.25,6e2\r\n7,1,-8,9\n")
with open(path("ragged.csv"), "w") as f:
    f.write("x,y,label\n1,2,0\n3,4,1\n5,6\n7,8,0\n")

print("fixtures written to", HERE)
