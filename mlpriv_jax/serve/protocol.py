"""The wire formats: the Open Inference Protocol v2 (KServe, Triton, Seldon) and TF Serving's v1 `:predict`.

Requests become u8 or f32 arrays [B, H, W, C] (checked by `oracle.validate_queries` afterwards); answers are the
released probabilities only. Every malformed request raises `QueryError` with a one-line message (HTTP 400).

v2 (`POST /v2/models/{name}[/versions/1]/infer`):
  {"id"?: str, "inputs": [{"name": str, "shape": [B, H, W, C], "datatype": "FP32" | "UINT8", "data": [...]}]}
  -> {"model_name", "model_version", "id", "outputs": [{"name": "probabilities", "shape": [B, K],
      "datatype": "FP32", "data": [...]}]}
  `data` is row-major, flat or nested. FP32 values lie in [0, 1]; UINT8 ones are integers in [0, 255].
  The binary tensor data extension (Triton, KServe): an input with `parameters.binary_data_size` has no `data`;
  its little-endian row-major bytes follow the JSON, whose length the `Inference-Header-Content-Length` header
  gives. Outputs come back the same way when the request's `parameters.binary_data_output` (or an output's
  `parameters.binary_data`) is true.
v1 (`POST /v1/models/{name}:predict`):
  {"instances": [image, ...]} with each image a nested [H][W][C] list of floats in [0, 1], or {"b64": PNG}
  (also under one named key, e.g. {"image": {"b64": ...}}) -> {"predictions": [[K floats], ...]}
"""

import base64
import binascii
import io
import json
import math
from typing import NamedTuple, Optional, Tuple

import numpy as np

from mlpriv_jax.oracle import QueryError

INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
MAX_BODY_BYTES = 4 << 20   # the default request size limit (Vertex AI's is 1.5 MB, Rekognition's 5 MB)
# The protocol's datatypes as little-endian numpy types (the binary tensor data extension's layout).
WIRE = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "UINT8": "u1", "INT64": "<i8", "INT32": "<i4"}
DATATYPES = {"FP32": np.float32, "UINT8": np.uint8}   # what this server's input takes


def _short(value) -> str:
  """A client's value in an error message: its repr, cut to 80 characters."""
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _numbers(data, what: str) -> np.ndarray:
  """A float64 array of JSON numbers (a flat or nested rectangular list), or QueryError."""
  if not isinstance(data, list):
    raise QueryError(f"{what} must be a list of numbers, got {type(data).__name__}")
  try:
    a = np.array(data)
  except (ValueError, TypeError, OverflowError, RecursionError):
    raise QueryError(f"{what} must be numbers in a rectangular (flat or nested) list") from None
  if a.dtype.kind not in "iuf":   # strings, booleans, nulls, objects, ragged lists
    raise QueryError(f"{what} must be numbers in a rectangular (flat or nested) list")
  return a.astype(np.float64)


def _to_dtype(a: np.ndarray, datatype: str) -> np.ndarray:
  if datatype == "UINT8":
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or a.min(initial=0) < 0 or a.max(initial=0) > 255:
      raise QueryError("UINT8 data must be integers in [0, 255]")
    return a.astype(np.uint8)
  return a.astype(np.float32)


class Request(NamedTuple):
  """A parsed v2 inference request: the images, the request id, and whether the answer goes in binary."""
  x: np.ndarray
  id: Optional[str]
  binary_output: bool


def split_binary(body: bytes, header_length: Optional[str]) -> Tuple[object, bytes]:
  """(the JSON document, the binary part) of a request body; `header_length` is the value of the binary tensor
  data extension's Inference-Header-Content-Length header (None: the whole body is JSON)."""
  if header_length is None:
    head, raw = body, b""
  else:
    if not header_length.isdigit() or int(header_length) > len(body):
      raise QueryError(f"Inference-Header-Content-Length must be the JSON's length in bytes (at most the body's "
                       f"{len(body)}), got {header_length[:40]!r}")
    head, raw = body[:int(header_length)], body[int(header_length):]
  try:
    return json.loads(head), raw
  except (ValueError, RecursionError) as e:   # JSONDecodeError, UnicodeDecodeError
    bytes_after = isinstance(e, UnicodeDecodeError) or (isinstance(e, json.JSONDecodeError) and e.msg == "Extra data")
    hint = ("; a body with binary tensors needs the Inference-Header-Content-Length header (the binary tensor "
            "data extension)" if header_length is None and bytes_after else "")
    raise QueryError(f"the body is not JSON: {str(e).splitlines()[0][:200]}{hint}") from None


def _flag(params, key: str) -> Optional[bool]:
  if params is None:
    return None
  if not isinstance(params, dict):
    raise QueryError("'parameters' must be an object")
  v = params.get(key)
  if v is not None and not isinstance(v, bool):
    raise QueryError(f"parameter {key!r} must be true or false")
  return v


def parse_v2(body, input_shape, raw: bytes = b"") -> Request:
  """The images u8/f32[B, H, W, C], the request id and the output format of an OIP v2 inference request, its
  tensor in JSON `data` or, with the binary tensor data extension, in `raw` (`parameters.binary_data_size`)."""
  if not isinstance(body, dict):
    raise QueryError("the request must be a JSON object with an 'inputs' list")
  inputs = body.get("inputs")
  if not isinstance(inputs, list) or len(inputs) != 1:
    raise QueryError(f"'inputs' must be a list of one tensor (the {INPUT_NAME!r} images)")
  t = inputs[0]
  if not isinstance(t, dict):
    raise QueryError("each input must be an object with name, shape, datatype and data")
  params = t.get("parameters")
  if params is not None and not isinstance(params, dict):
    raise QueryError("'parameters' must be an object")
  size = (params or {}).get("binary_data_size")
  missing = [k for k in ("name", "shape", "datatype", "data") if k not in t and not (k == "data" and size is not None)]
  if missing:
    raise QueryError(f"input tensor lacks {', '.join(missing)}")
  if t["name"] != INPUT_NAME:
    raise QueryError(f"unknown input {_short(t['name'])}; the model's input is {INPUT_NAME!r}")
  if not isinstance(t["datatype"], str) or t["datatype"] not in DATATYPES:
    raise QueryError(f"datatype must be one of {', '.join(DATATYPES)}, got {_short(t['datatype'])}")
  shape = t["shape"]
  if (not isinstance(shape, list) or len(shape) != 1 + len(input_shape)
      or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
      or tuple(shape[1:]) != tuple(input_shape) or shape[0] < 1):
    raise QueryError(f"shape must be [B, {', '.join(map(str, input_shape))}] with B >= 1, got {_short(shape)}")
  rid = body.get("id")
  if rid is not None and not isinstance(rid, str):
    raise QueryError("'id' must be a string")
  outputs = body.get("outputs")
  if outputs is not None and (not isinstance(outputs, list) or any(
      not isinstance(o, dict) or o.get("name") != OUTPUT_NAME for o in outputs)):
    raise QueryError(f"the model's only output is {OUTPUT_NAME!r}")
  binary_output = bool(_flag(body.get("parameters"), "binary_data_output"))
  for o in outputs or ():
    asked = _flag(o.get("parameters"), "binary_data")
    binary_output = binary_output if asked is None else asked
  dtype = DATATYPES[t["datatype"]]
  if size is not None:
    need = math.prod(shape) * np.dtype(WIRE[t["datatype"]]).itemsize
    if isinstance(size, bool) or not isinstance(size, int) or size != need or len(raw) != size:
      raise QueryError(f"binary_data_size {_short(size)} and the {len(raw)} bytes after the JSON must both be "
                       f"{need} (shape {shape}, {t['datatype']})")
    a = np.frombuffer(raw, WIRE[t["datatype"]]).astype(dtype).reshape(shape)
    if t["datatype"] == "FP32" and not np.all(np.isfinite(a)):
      raise QueryError(f"queries hold {int((~np.isfinite(a)).sum())} NaN or inf values")
    return Request(a, rid, binary_output)
  if raw:
    raise QueryError(f"{len(raw)} bytes follow the JSON but no input has parameters.binary_data_size")
  a = _numbers(t["data"], "data")
  if a.size != math.prod(shape):
    raise QueryError(f"data holds {a.size} values; shape {shape} needs {math.prod(shape)}")
  return Request(_to_dtype(a.reshape(shape), t["datatype"]), rid, binary_output)


SENDS = ("FP32", "FP64", "FP16", "UINT8")   # the input datatypes a client sends images as


def request_v2(x: np.ndarray, *, input_name: str = INPUT_NAME, datatype: Optional[str] = None,
               output_name: Optional[str] = None, binary: bool = False) -> Tuple[bytes, dict]:
  """(body, headers) of a v2 inference request for images x as `datatype` (default: UINT8 for uint8, else FP32):
  in JSON, floats as 9 significant digits (float32's round-trip precision: exact), or with binary=True in the
  binary tensor data extension (the output asked for in binary too)."""
  datatype = datatype or ("UINT8" if x.dtype == np.uint8 else "FP32")
  t = {"name": input_name, "shape": list(x.shape), "datatype": datatype}
  req = {"inputs": [t]}
  if output_name is not None:
    req["outputs"] = [{"name": output_name}]
  if binary:
    raw = np.asarray(x).astype(WIRE[datatype]).tobytes()
    t["parameters"] = {"binary_data_size": len(raw)}
    if output_name is not None:
      req["outputs"][0]["parameters"] = {"binary_data": True}
    else:
      req["parameters"] = {"binary_data_output": True}
    head = json.dumps(req).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
  if datatype == "UINT8":
    data = ",".join(map(str, np.asarray(x, np.uint8).ravel().tolist()))
  else:
    data = ",".join(np.char.mod("%.9g", np.asarray(x, np.float32).ravel()).tolist())
  marker = '"datatype": ' + json.dumps(datatype)
  body = json.dumps(req).replace(marker, marker + ', "data": [' + data + ']', 1)
  return body.encode(), {"Content-Type": "application/json"}


def answer_v2(probs: np.ndarray, model_name: str, rid, binary: bool = False) -> Tuple[dict, bytes]:
  """(the JSON answer, its binary part): the probabilities in `data`, or with binary=True as little-endian FP32
  bytes after the JSON (`parameters.binary_data_size`)."""
  probs = np.asarray(probs, np.float32)
  out = {"name": OUTPUT_NAME, "shape": list(probs.shape), "datatype": "FP32"}
  raw = b""
  if binary:
    raw = probs.astype(WIRE["FP32"]).tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
  else:
    out["data"] = probs.ravel().tolist()
  doc = {"model_name": model_name, "model_version": "1", "outputs": [out]}
  if rid is not None:
    doc["id"] = rid
  return doc, raw


def decode_png(b64, input_shape) -> np.ndarray:
  """u8[H, W, C] of a base64 PNG of exactly the model's size (checked before the pixels are decoded)."""
  from PIL import Image
  if not isinstance(b64, str):
    raise QueryError("'b64' must be a base64 string")
  try:
    raw = base64.b64decode(b64, validate=True)
    img = Image.open(io.BytesIO(raw))
    if img.format != "PNG":
      raise QueryError(f"b64 images must be PNG, got {img.format}")
    h, w, c = input_shape
    if img.size != (w, h):
      raise QueryError(f"b64 image is {img.size[0]}x{img.size[1]}; the model takes {w}x{h}")
    a = np.asarray(img.convert("RGB" if c == 3 else "L"))
  except QueryError:
    raise
  except (binascii.Error, ValueError, OSError, Image.DecompressionBombError) as e:
    raise QueryError(f"b64 is not a readable PNG: {type(e).__name__}") from None
  return a.reshape(input_shape).astype(np.uint8)


def parse_v1(body, input_shape) -> np.ndarray:
  """Images u8/f32[B, H, W, C] of a TF Serving `:predict` request in the row ('instances') format."""
  if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
    raise QueryError("the request must be a JSON object with a non-empty 'instances' list")
  inst = body["instances"]
  inst = [next(iter(i.values())) if isinstance(i, dict) and len(i) == 1 and "b64" not in i else i for i in inst]
  if all(isinstance(i, dict) for i in inst):
    if any(set(i) != {"b64"} for i in inst):
      raise QueryError("an image object must be {'b64': <base64 PNG>}")
    return np.stack([decode_png(i["b64"], input_shape) for i in inst])
  if any(not isinstance(i, list) for i in inst):
    raise QueryError("instances must all be nested lists of floats in [0, 1], or all {'b64': PNG}")
  a = _numbers(inst, "instances")
  if a.shape[1:] != tuple(input_shape):
    raise QueryError(f"each instance must have shape {list(input_shape)}, got {list(a.shape[1:])}")
  return a.astype(np.float32)


def answer_v1(probs: np.ndarray) -> dict:
  return {"predictions": np.asarray(probs, np.float32).tolist()}
