"""Quantized Hugging Face checkpoints: which loader reads a `quantization_config`.

FP8 (Meta's fbgemm_fp8, compressed-tensors float-quantized) maps onto the core's FP8 E4M3 format
(fp8_checkpoints); INT4 (AWQ, GPTQ, compressed-tensors pack-quantized) onto its INT4 group-wise
format (int4_checkpoints). Anything else is refused, naming the method.
"""

from __future__ import annotations

from ..errors import ModelFormatError
from . import fp8_checkpoints, int4_checkpoints

SUPPORTED = ("fbgemm_fp8, compressed-tensors ('float-quantized' FP8 or 'pack-quantized' INT4), "
             "awq ('gemm') and gptq")


def core_tensors(checkpoint, qconfig: dict, where: str) -> dict[str, dict]:
    """The checkpoint's tensors as core specs, by the loader of its quantization method."""
    method = qconfig.get("quant_method")
    if method == "compressed-tensors":
        fmt = qconfig.get("format")
        if fmt == "pack-quantized":
            return int4_checkpoints.core_tensors(checkpoint, qconfig, where)
        if fmt == "float-quantized":
            return fp8_checkpoints.core_tensors(checkpoint, qconfig, where)
        raise ModelFormatError(f"{where}: quantized checkpoints with compressed-tensors format {fmt!r} are not "
                               f"supported (llama_local loads {SUPPORTED})")
    if method == "fbgemm_fp8":
        return fp8_checkpoints.core_tensors(checkpoint, qconfig, where)
    if method in ("awq", "gptq"):
        return int4_checkpoints.core_tensors(checkpoint, qconfig, where)
    raise ModelFormatError(f"{where}: quantized checkpoints with quant_method {method!r} are not supported "
                           f"(llama_local loads {SUPPORTED})")
