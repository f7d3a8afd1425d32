"""FP8 checkpoints in Hugging Face layout, mapped onto the core's FP8 E4M3 format at load.

Two producers write them, both with float8_e4m3fn `X.weight` tensors and a `X.weight_scale` beside:
- Meta's FP8 release (`quant_method: fbgemm_fp8`, e.g. Llama-3.1-405B-Instruct-FP8): one float32
  scale per output row ([N, 1]); the modules in `modules_to_not_convert` stay bf16.
  `activation_scale_ub` bounds the dynamic per-token FP8 activation scales of GPU kernels.
- compressed-tensors' `float-quantized` format (llm-compressor's FP8 and FP8_DYNAMIC schemes):
  8-bit float weights with a "channel" ([N, 1]), "tensor" ([1]), "group" ([N, K / g]) or "block"
  ([ceil(N / bn), ceil(K / bk)]) scale, in the checkpoint's dtype; `ignore` lists bf16 modules.
A weight dequantizes to code * scale. The core keeps the codes and takes the scales in float32
(bf16 and fp16 scales convert exactly), so every weight it sees is that product, exact in fp32
(a 4-bit significand times an 11-bit one). On the CPU activations stay in fp32 (W8A16). Where the
checkpoint says its activations are FP8 too (Meta's release always; compressed-tensors when every
config group has 8-bit float `input_activations`), each spec carries "act_ub", the bound on a
token's activation scale (Meta's `activation_scale_ub`, +inf for compressed-tensors): the GPU
then quantizes each token's activations to E4M3 at run time and multiplies on FP8 tensor cores
(W8A8, sm_89+). Static per-tensor `input_scale`s are not used: per-token scales fit each token.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelFormatError

SUFFIX_SCALE = "weight_scale"
# Tensors that carry activation-quantization settings for W8A8 kernels, or zero points that a
# symmetric FP8 scheme stores as zeros.
SKIPPED_SUFFIXES = (".input_scale", ".input_scale_ub", ".weight_zero_point", ".input_zero_point")


def supported(qconfig: dict) -> str | None:
    """None if this quantization_config is an FP8 one loaded here, else why not (quantized_checkpoints
    routes the INT4 ones, compressed-tensors pack-quantized included, to int4_checkpoints)."""
    method = qconfig.get("quant_method")
    if method == "fbgemm_fp8":
        return None
    if method == "compressed-tensors":
        fmt = qconfig.get("format")
        if fmt != "float-quantized":
            return f"compressed-tensors format {fmt!r} (FP8 checkpoints are 'float-quantized')"
        for name, group in (qconfig.get("config_groups") or {}).items():
            w = (group or {}).get("weights") or {}
            if w.get("type") != "float" or w.get("num_bits") != 8:
                return (f"compressed-tensors config group {name!r}: {w.get('num_bits')}-bit "
                        f"{w.get('type')} weights in a 'float-quantized' checkpoint (it holds 8-bit floats)")
        return None
    return f"quant_method {method!r}"


def _block_structure(qconfig: dict) -> tuple[int, int] | None:
    for group in (qconfig.get("config_groups") or {}).values():
        w = (group or {}).get("weights") or {}
        if w.get("strategy") == "block":
            bs = w.get("block_structure")
            if (not isinstance(bs, (list, tuple)) or len(bs) != 2
                    or not all(isinstance(b, int) and b > 0 for b in bs)):
                raise ModelFormatError(f"compressed-tensors block strategy needs block_structure [rows, cols], "
                                       f"got {bs!r}")
            return int(bs[0]), int(bs[1])
    return None


def fp8_spec(name: str, codes: np.ndarray, scale: np.ndarray, block_rows_cols: tuple[int, int] | None) -> dict[str, Any]:
    """The core's FP8 spec for `codes` [N, K] and its scale tensor, by the scale's shape."""
    if codes.ndim != 2:
        raise ModelFormatError(f"tensor {name!r}: FP8 weights must be 2-D, got shape {list(codes.shape)}")
    n, k = codes.shape
    s = np.asarray(scale)
    if s.dtype.kind != "f" and str(s.dtype) != "bfloat16":
        raise ModelFormatError(f"tensor {name}_scale: expected a float scale, got {s.dtype}")
    s = s.astype(np.float32)
    where = f"tensor {name!r} (shape [{n}, {k}])"
    if s.size == 1:                                     # one scale for the tensor
        return {"format": "fp8", "data": codes, "scales": np.full(n, s.reshape(-1)[0], np.float32), "block": 0}
    if s.shape in ((n,), (n, 1)):                       # one per output row
        return {"format": "fp8", "data": codes, "scales": np.ascontiguousarray(s.reshape(n)), "block": 0}
    if s.ndim == 2 and block_rows_cols is not None:     # [ceil(N / bn), ceil(K / bk)] blocks
        bn, bk = block_rows_cols
        if s.shape != (-(-n // bn), -(-k // bk)):
            raise ModelFormatError(f"{where}: block scales of shape {list(s.shape)} do not tile it in "
                                   f"{bn}x{bk} blocks")
        rows = np.ascontiguousarray(np.repeat(s, bn, axis=0)[:n])
        return {"format": "fp8", "data": codes, "scales": rows, "block": bk}
    if s.ndim == 2 and s.shape[0] == n and k % s.shape[1] == 0:  # groups along K
        return {"format": "fp8", "data": codes, "scales": np.ascontiguousarray(s), "block": k // s.shape[1]}
    raise ModelFormatError(f"{where}: a scale of shape {list(s.shape)} is none of per-tensor, per-row, "
                           "per-group or per-block")


def activation_bound(qconfig: dict) -> float | None:
    """The bound on a token's FP8 activation scale when the checkpoint quantizes activations to
    FP8 (W8A8), None when only its weights are FP8."""
    if qconfig.get("quant_method") == "fbgemm_fp8":
        ub = qconfig.get("activation_scale_ub", 1200.0)  # fbgemm's and transformers' default
        if not isinstance(ub, (int, float)) or not ub > 0:
            raise ModelFormatError(f"fbgemm_fp8 activation_scale_ub must be a positive number, got {ub!r}")
        return float(ub)
    groups = [g or {} for g in (qconfig.get("config_groups") or {}).values()]
    acts = [g.get("input_activations") or {} for g in groups]
    if groups and all(a.get("type") == "float" and a.get("num_bits") == 8 for a in acts):
        return float("inf")
    return None


def core_tensors(checkpoint, qconfig: dict, where: str) -> dict[str, dict]:
    """The checkpoint's tensors as core specs: FP8 weights with their scales, the rest as floats."""
    why = supported(qconfig)
    if why is not None:
        raise ModelFormatError(f"{where}: quantized checkpoints with {why} are not supported")
    blocks = _block_structure(qconfig) if qconfig.get("quant_method") == "compressed-tensors" else None
    act_ub = activation_bound(qconfig)
    names = set(checkpoint.keys())
    out: dict[str, dict] = {}
    for name in sorted(names):
        if name.endswith(SKIPPED_SUFFIXES) or name.endswith("." + SUFFIX_SCALE):
            continue
        dtype, _ = checkpoint.info(name)
        if str(dtype) != "float8_e4m3fn":
            out[name] = {"format": "float", "data": checkpoint.tensor(name), "releasable": True}
            continue
        if not name.endswith(".weight"):
            raise ModelFormatError(f"{where}: tensor {name!r} is FP8 but not a weight")
        scale_name = name[: -len("weight")] + SUFFIX_SCALE
        if scale_name not in names:
            raise ModelFormatError(f"{where}: FP8 tensor {name!r} has no {scale_name!r}")
        zp = name[: -len("weight")] + "weight_zero_point"
        if zp in names and np.any(checkpoint.tensor(zp) != 0):
            raise ModelFormatError(f"{where}: {zp!r} is not zero; FP8 weights are symmetric")
        spec = fp8_spec(name, checkpoint.tensor(name), checkpoint.tensor(scale_name), blocks)
        spec["releasable"] = True
        if act_ub is not None:
            spec["act_ub"] = act_ub
        out[name] = spec
    return out
