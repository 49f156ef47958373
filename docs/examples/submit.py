#!/usr/bin/env python3
"""Submit an inference job to `jobfarm serve`, wait for it, print the result. Plain `requests`.

    JOBFARM_URL=http://127.0.0.1:8080 JOBFARM_API_KEY=jfk_... python3 docs/examples/submit.py [MODEL [ROWS]]

MODEL is a model reference (default digits-mlp:production); ROWS a JSON array of rows, each of the model's input
width (default: two 8x8 digits of 64 pixels). Exits 1 when the job is refused (every problem printed) or does not
succeed. docs/API.md describes the routes; tests run this script against a real dispatcher.
"""
import json
import os
import sys
import time
import uuid

import requests

API = os.environ.get("JOBFARM_URL", "http://127.0.0.1:8080").rstrip("/")
HEADERS = {"Authorization": "Bearer " + os.environ["JOBFARM_API_KEY"]}
FINAL = {"succeeded", "dead", "cancelled"}

DIGITS = [
    [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0,
     0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0],
    [0, 0, 0, 12, 13, 5, 0, 0, 0, 0, 0, 11, 16, 9, 0, 0, 0, 0, 3, 15, 16, 6, 0, 0, 0, 7, 15, 16, 16, 2, 0, 0,
     0, 0, 1, 16, 16, 3, 0, 0, 0, 0, 1, 16, 16, 6, 0, 0, 0, 0, 1, 16, 16, 6, 0, 0, 0, 0, 0, 11, 16, 10, 0, 0],
]


def call(method, path, **kwargs):
    """One request; on 503 (Redis away) or 429 (rate limit), waits Retry-After seconds and tries again."""
    headers = {**HEADERS, **kwargs.pop("headers", {})}
    for _ in range(10):
        answer = requests.request(method, API + path, headers=headers, **kwargs)
        if answer.status_code not in (429, 503):
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    return answer


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "digits-mlp:production"
    rows = json.loads(sys.argv[2]) if len(sys.argv) > 2 else DIGITS
    job = {"kind": "inference", "tier": "standard", "payload": {"model": model, "inputs": rows, "topK": 2}}

    # The same Idempotency-Key on a retry answers the first job instead of making a second one.
    answer = call("POST", "/v1/jobs", json=job, headers={"Idempotency-Key": str(uuid.uuid4())}, timeout=30)
    if answer.status_code in (400, 403, 413, 415, 422):
        problem = answer.json()
        print(f"refused ({problem['status']} {problem['title']}): {problem['detail']}")
        for error in problem.get("errors", []):
            print(f"  {error.get('pointer', error.get('parameter', ''))}: {error['detail']}")
        return 1
    answer.raise_for_status()  # 201, or 202 when the job was spooled while Redis is down: the same from here
    accepted = answer.json()
    print(f"submitted {accepted['id']} to queue {accepted['queue']} ({accepted['workersServing']} workers serving)")

    # Long poll: each request answers when the job is final, or after 30 s with the job as it is then.
    while True:
        answer = call("GET", f"/v1/jobs/{accepted['id']}/wait", params={"timeout": "30s"}, timeout=60)
        answer.raise_for_status()
        status = answer.json()
        if status["state"] in FINAL:
            break

    print(f"state: {status['state']}")
    if status["state"] != "succeeded":
        print(f"error: {status.get('error')} ({status.get('reason')})")
        return 1
    result = status["result"]
    print(f"predictions: {result['predictions']}")
    for row, classes in enumerate(result["topK"]):
        print(f"  row {row}: " + ", ".join(f"{c['label'] if 'label' in c else c['index']} ({c['probability']:.3f})" for c in classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
