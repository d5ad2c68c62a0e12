#!/usr/bin/env python3
"""Writes the wrk Lua scripts of scripts/bench-oip.sh: one iris row per request, as the native
predict route takes it and as the OIP infer route takes it (JSON, and binary as tritonclient
sends it by default: an FP32 [1, 4] tensor after the JSON header, outputs in binary)."""

import json
import struct
import sys

out_dir, token = sys.argv[1], sys.argv[2]
row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
values = list(row.values())


def lua_string(data: bytes) -> str:
    # Lua 5.1 decimal escapes: any byte, binary included.
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def write(name: str, body: bytes, headers: dict) -> None:
    headers = {"Authorization": f"Bearer {token}", **headers}
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    with open(f"{out_dir}/{name}.lua", "w") as f:
        f.write("\n".join(lines) + "\n")


write("native", json.dumps({"instances": [row]}).encode(), {"Content-Type": "application/json"})
write("oip-json", json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                           "data": values}]}).encode(), {"Content-Type": "application/json"})
header = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 16}}],
                     "parameters": {"binary_data_output": True}}).encode()
write("oip-binary", header + struct.pack("<4f", *values),
      {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
