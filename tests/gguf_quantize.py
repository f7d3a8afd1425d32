"""Writing quantized GGUF files for the tests: Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS blocks (gguf-py
quantizes only the legacy types), and llama.cpp's choice of type per tensor for its Q4_K_M /
Q5_K_M / Q6_K / Q8_0 files.

The quantizers are plain round-to-nearest, not llama.cpp's error-minimising search: the files are
valid and close to their source, which is what the tests need (the oracle for reading them is
gguf-py's own dequantization, through transformers).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType


def _f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float32), where=b != 0)


def _k_quant_scales_mins(w: np.ndarray, levels: int):
    """Q4_K / Q5_K's shared part (w = d sc q - dmin m per 32 columns, q in [0, levels]): the
    super-blocks' d and dmin, and the codes [blocks, 8 sub-blocks, 32] with their 12 bytes of 6-bit
    scales and mins packed as ggml's get_scale_min_k4 reads them."""
    x = np.asarray(w, dtype=np.float32).reshape(-1, 8, 32)
    lo = np.minimum(x.min(-1), 0.0)
    scale = (x.max(-1) - lo) / levels
    d = _f16(scale.max(-1) / 63)
    dmin = _f16((-lo).max(-1) / 63)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.rint(_div(scale, df)), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(_div(-lo, dminf)), 0, 63).astype(np.uint8)
    step = (df * sc)[..., None]
    q = np.clip(np.rint(_div(x + (dminf * mn)[..., None], step)), 0, levels).astype(np.uint8)
    scales = np.zeros((x.shape[0], 12), dtype=np.uint8)
    scales[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)
    head = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales], 1)
    return head, q


def quantize_q4_k(w: np.ndarray) -> np.ndarray:
    """[rows, cols] float -> [rows, cols / 256 * 144] Q4_K bytes (w = d sc q - dmin m)."""
    head, q = _k_quant_scales_mins(w, 15)
    q = q.reshape(-1, 4, 2, 32)  # element 64c + 32h + l
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(-1, 128)
    return np.concatenate([head, qs], 1).reshape(w.shape[0], -1)


def quantize_q5_k(w: np.ndarray) -> np.ndarray:
    """[rows, cols] float -> [rows, cols / 256 * 176] Q5_K bytes (w = d sc q - dmin m, q 5 bits):
    Q4_K's low nibbles, and qh[l] bit 2c + h the fifth bit of element 64c + 32h + l."""
    head, q = _k_quant_scales_mins(w, 31)
    q = q.reshape(-1, 4, 2, 32)
    qs = ((q[:, :, 0, :] & 15) | ((q[:, :, 1, :] & 15) << 4)).reshape(-1, 128)
    bit = (np.arange(4)[:, None] * 2 + np.arange(2)[None, :])[None, :, :, None]  # 2c + h
    qh = (((q >> 4) & 1).astype(np.uint32) << bit).sum(axis=(1, 2)).astype(np.uint8)
    return np.concatenate([head, qh, qs], 1).reshape(w.shape[0], -1)


def quantize_q6_k(w: np.ndarray) -> np.ndarray:
    """[rows, cols] float -> [rows, cols / 256 * 210] Q6_K bytes (w = d sc (q - 32))."""
    x = np.asarray(w, dtype=np.float32).reshape(-1, 16, 16)
    scale = np.abs(x).max(-1) / 31
    d = _f16(scale.max(-1) / 127)
    df = d.astype(np.float32)[:, None]
    sc = np.clip(np.rint(_div(scale, df)), -127, 127).astype(np.int8)
    step = (df * sc)[..., None]
    u = (np.clip(np.rint(_div(x, step)), -32, 31) + 32).astype(np.uint8).reshape(-1, 256)
    ul = u & 15
    ql = np.concatenate([ul[:, 128 * h:128 * h + 64] | (ul[:, 128 * h + 64:128 * h + 128] << 4) for h in (0, 1)], 1)
    uh = (u >> 4).reshape(-1, 2, 4, 32)  # element 128h + 32s + l
    qh = (uh[:, :, 0] | (uh[:, :, 1] << 2) | (uh[:, :, 2] << 4) | (uh[:, :, 3] << 6)).reshape(-1, 64)
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], 1)
    return blocks.reshape(w.shape[0], -1)


IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)


def quantize_iq4_nl(w: np.ndarray) -> np.ndarray:
    """[rows, cols] float -> [rows, cols / 32 * 18] IQ4_NL bytes (w = d IQ4_NL_VALUES[i] per 32
    columns): element l's index in the low nibble of byte l, element 16 + l's in its high nibble."""
    x = np.asarray(w, dtype=np.float32).reshape(-1, 32)
    d = _f16(x[np.arange(len(x)), np.abs(x).argmax(-1)] / -127)  # the largest |w| on the book's -127
    step = d.astype(np.float32)[:, None]
    i = np.abs(_div(x, step)[..., None] - IQ4_NL_VALUES).argmin(-1).astype(np.uint8)
    qs = i[:, :16] | (i[:, 16:] << 4)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), qs], 1).reshape(w.shape[0], -1)


def quantize_iq4_xs(w: np.ndarray) -> np.ndarray:
    """[rows, cols] float -> [rows, cols / 256 * 136] IQ4_XS bytes: per 256 columns d, then per 32
    a 6-bit ls (w = d (ls - 32) IQ4_NL_VALUES[i]; low 4 bits in scales_l, high 2 in scales_h) and
    IQ4_NL's nibbles."""
    x = np.asarray(w, dtype=np.float32).reshape(-1, 8, 32)
    want = x[np.arange(x.shape[0])[:, None], np.arange(8)[None, :], np.abs(x).argmax(-1)] / -127  # as IQ4_NL's d
    d = _f16(np.abs(want).max(-1) / 32)
    df = d.astype(np.float32)[:, None]
    ls = np.clip(np.rint(_div(want, df)) + 32, 0, 63).astype(np.uint8)
    step = (df * (ls.astype(np.float32) - 32))[..., None]
    i = np.abs(_div(x, step)[..., None] - IQ4_NL_VALUES).argmin(-1).astype(np.uint8)
    qs = (i[..., :16] | (i[..., 16:] << 4)).reshape(-1, 128)
    scales_l = (ls[:, 0::2] & 15) | ((ls[:, 1::2] & 15) << 4)
    scales_h = ((ls.astype(np.uint16) >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(-1).astype(np.uint16)
    blocks = np.concatenate([d.view(np.uint8).reshape(-1, 2), scales_h.view(np.uint8).reshape(-1, 2), scales_l, qs], 1)
    return blocks.reshape(w.shape[0], -1)


def quantize(w: np.ndarray, qtype) -> np.ndarray:
    if qtype == Q.Q4_K:
        return quantize_q4_k(w)
    if qtype == Q.Q5_K:
        return quantize_q5_k(w)
    if qtype == Q.IQ4_NL:
        return quantize_iq4_nl(w)
    if qtype == Q.IQ4_XS:
        return quantize_iq4_xs(w)
    if qtype == Q.Q6_K:
        return quantize_q6_k(w)
    return gguf.quants.quantize(np.asarray(w, dtype=np.float32), qtype)


# llama.cpp (llama-quant.cpp) when a row length is not a multiple of 256
_FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}


def _more_bits(layer: int, n_layers: int) -> bool:
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def llamacpp_type(name: str, cols: int, ftype: str, n_layers: int, tied: bool = True):
    """The type llama.cpp's quantizer (llama-quant.cpp) gives tensor `name` in an `ftype` file
    ("q4_k_m", "q5_k_m", "q6_k", "q8_0"). `tied`: the file has no output.weight, so token_embd is
    also the output and is typed as one."""
    if ftype == "q8_0":
        t = Q.Q8_0
    elif ftype == "q6_k":
        t = Q.Q6_K
    elif ftype in ("q4_k_m", "q5_k_m"):
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            t = Q.Q6_K
        elif (".attn_v." in name or ".ffn_down." in name) and _more_bits(layer, n_layers):
            t = Q.Q6_K
        else:
            t = Q.Q4_K if ftype == "q4_k_m" else Q.Q5_K
    else:
        raise ValueError(f"no type mix for {ftype!r}: one of q4_k_m, q5_k_m, q6_k, q8_0")
    if t in _FALLBACK and cols % 256:
        t = _FALLBACK[t]
    return t


def requantize_gguf(src: Path, dst: Path, ftype: str) -> Path:
    """`src` re-quantized the way llama.cpp's quantizer types an `ftype` file (metadata copied)."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    n_layers = int(r.fields[f"{arch}.block_count"].contents())
    tied = not any(t.name == "output.weight" for t in r.tensors)
    w = gguf.GGUFWriter(str(dst), arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name == "general.file_type":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(name, field.contents(), vtype)
    for t in r.tensors:
        shape = [int(s) for s in reversed(t.shape)]  # numpy order [rows, cols]
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        if len(shape) == 1:
            w.add_tensor(t.name, data.astype(np.float32))
            continue
        qt = llamacpp_type(t.name, shape[1], ftype, n_layers, tied)
        w.add_tensor(t.name, quantize(data, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst
