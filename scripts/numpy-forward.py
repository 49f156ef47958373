#!/usr/bin/env python3
"""NumPy's forward pass of a PyTorch-layout safetensors MLP, for `jobfarm bench blas --only inference`.

Usage: [OPENBLAS_NUM_THREADS=N] numpy-forward.py MODEL.safetensors ROWS[,ROWS...]

Reads the file without safetensors or torch (the format is an 8-byte header length, a JSON header, raw tensors),
runs `relu(x @ W.T + b)` per layer (no activation after the last) on random float32 rows, and prints one JSON
object: the OpenBLAS build and kernels NumPy runs (`OPENBLAS_CORETYPE` may be set on these machines, so the
library is asked, not assumed) and the best seconds per pass for each row count (best of interleaved rounds).
Exit 3 when NumPy is not installed (the bench says so and prints raw OpenBLAS figures alone).
"""
import ctypes
import glob
import json
import os
import re
import struct
import sys
import time

try:
    import numpy as np
except ImportError:
    print(json.dumps({"error": "numpy is not installed (pip install numpy)"}))
    sys.exit(3)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    dtypes = {"F32": np.float32, "F16": np.float16}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).astype(np.float32)
    return tensors


def layers_of(tensors):
    """`<prefix>.<i>.weight` / `.bias` ordered by index (nn.Sequential skips the activations' indices)."""
    found = []
    for name in tensors:
        m = re.match(r"^(.*?)(\d+)\.weight$", name)
        if m:
            found.append((int(m.group(2)), name, m.group(1) + m.group(2) + ".bias"))
    found.sort()
    return [(tensors[w], tensors.get(b)) for _, w, b in found]


def forward(layers, x):
    for i, (w, b) in enumerate(layers):
        x = x @ w.T
        if b is not None:
            x += b
        if i < len(layers) - 1:
            np.maximum(x, 0, out=x)
    return x


def openblas_info():
    """The OpenBLAS NumPy loaded: its config and the kernel family it runs (asked through ctypes)."""
    info = {"numpy": np.__version__, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*.so*"))
    libs += glob.glob(os.path.join(os.path.dirname(np.__file__), ".libs", "*openblas*.so*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"), ("openblas_", "")):
            try:
                corename = getattr(lib, prefix + "get_corename" + suffix)
                config = getattr(lib, prefix + "get_config" + suffix)
                threads = getattr(lib, prefix + "get_num_threads" + suffix)
            except AttributeError:
                continue
            corename.restype = ctypes.c_char_p
            config.restype = ctypes.c_char_p
            info.update(library=os.path.basename(path), kernels=corename().decode().strip(),
                        config=config().decode().strip(), threads=threads())
            return info
    info["kernels"] = "unknown (no OpenBLAS library found beside NumPy)"
    return info


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    layers = layers_of(load_safetensors(sys.argv[1]))
    counts = [int(v) for v in sys.argv[2].split(",")]
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal((n, layers[0][0].shape[1]), dtype=np.float32) for n in counts}
    best = {n: float("inf") for n in counts}
    for n in counts:
        forward(layers, inputs[n])
    for _ in range(5):
        for n in counts:
            calls, start = 0, time.perf_counter()
            while True:
                forward(layers, inputs[n])
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= 0.05:
                    break
            best[n] = min(best[n], elapsed / calls)
    print(json.dumps({"openblas": openblas_info(), "seconds": {str(n): best[n] for n in counts}}))


if __name__ == "__main__":
    main()
