#!/usr/bin/env python3
"""Calls a JobFarm dispatcher's Open Inference Protocol routes with NVIDIA's tritonclient[http] package.

Usage: triton-client.py HOST:PORT MODEL API_KEY

Sends the same kind of request a Triton user sends: JSON and binary tensors, FP32 and FP16, and prints one JSON
line with what it sent and what came back (the test holds the answers to the model).
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient

url, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
headers = {"Authorization": f"Bearer {key}"}
client = httpclient.InferenceServerClient(url=url)

report = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "modelReady": client.is_model_ready(model, headers=headers),
}
metadata = client.get_model_metadata(model, headers=headers)
report["inputShape"] = metadata["inputs"][0]["shape"]
width = metadata["inputs"][0]["shape"][1]

rng = np.random.default_rng(3)
cases = []
for name, rows, dtype, binary, tier in [
    ("json-fp32", 2, np.float32, False, None),
    ("binary-fp32", 5, np.float32, True, "premium"),
    ("binary-fp16", 4, np.float16, True, None),
    ("json-fp16", 1, np.float16, False, "free"),
]:
    values = rng.uniform(-1, 1, size=(rows, width)).astype(dtype)
    tensor = httpclient.InferInput("input", list(values.shape), "FP16" if dtype == np.float16 else "FP32")
    tensor.set_data_from_numpy(values, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary),
               httpclient.InferRequestedOutput("probabilities", binary_data=not binary)]
    call_headers = dict(headers)
    if tier:
        call_headers["JobFarm-Tier"] = tier
    result = client.infer(model, inputs=[tensor], outputs=outputs, headers=call_headers, request_id=name)
    logits = result.as_numpy("logits")
    probabilities = result.as_numpy("probabilities")
    response = result.get_response()
    assert logits.dtype == np.float32 and logits.shape[0] == rows, (name, logits.dtype, logits.shape)
    assert response["id"] == name, response
    if tier:
        assert response["parameters"]["tier"] == tier, response
    cases.append({
        "name": name, "rows": rows, "datatype": "FP16" if dtype == np.float16 else "FP32",
        "input": values.astype(np.float32).ravel().tolist(),
        "logits": logits.ravel().tolist(), "probabilities": probabilities.ravel().tolist(),
    })
report["cases"] = cases
print(json.dumps(report))
