"""INT4 checkpoints people download (AWQ, GPTQ, compressed-tensors pack-quantized), mapped exactly
onto the core's INT4 group-wise format at load.

All three store the same kind of weight: a 4-bit code u per element of W [N, K] (out, in), and per
group of input columns a scale s and a zero point z, dequantized as w = s * (u - z). They differ in
how the codes and zeros are packed into int32 words and in which axis comes first. Restated from
each producer's own code (nibble i of a word is bits 4i..4i+3):

AWQ, version "gemm" (AutoAWQ, awq/modules/linear/gemm.py WQLinear_GEMM.from_linear and
awq/utils/packing_utils.py dequantize_gemm): `qweight` int32 [K, N / 8], packed along N with the
interleave AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]: nibble i of word [k, j] is u[8j + AWQ_ORDER[i], k].
`qzeros` int32 [K / g, N / 8], packed the same way, holds z itself (0..15). `scales` fp16 [K / g, N].

GPTQ (AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda.py QuantLinear.pack / forward; GPTQModel
for "gptq_v2"): `qweight` int32 [K / 8, N], packed along K: nibble i of word [r, n] is u[n, 8r + i].
`qzeros` int32 [ceil(K / g), N / 8], packed along N: nibble i of word [t, j] belongs to column
8j + i. checkpoint_format "gptq" (v1) stores z - 1, and AutoGPTQ dequantizes with
(nibble & 15) + 1, so z runs 1..16 (a stored 15 is 16: v1 cannot hold a zero point of 0);
"gptq_v2" (GPTQModel) stores z. `scales` fp16 [ceil(K / g), N]; `g_idx` int32 [K], the group of
each input column: w[n, k] = scales[g_idx[k], n] * (u[n, k] - z[g_idx[k], n]).

compressed-tensors "pack-quantized" (compressed_tensors pack_to_int32 / unpack_from_int32 and
quantization/lifecycle/forward.py dequantize): signed codes q in [-8, 7] stored as q + 8,
`weight_packed` int32 [N, ceil(K / 8)], packed along K: nibble i of word [n, j] is q[n, 8j + i] + 8.
`weight_scale` [N, K / g] ("group") or [N, 1] ("channel"), in the model's dtype. Asymmetric schemes
add `weight_zero_point` int32 [ceil(N / 8), K / g], signed zero points + 8 packed along N (nibble
i of word [j, t] belongs to row 8j + i); w = s * (q - zp) = s * (u - z) with u and z the stored
nibbles. Symmetric schemes have no zero point: w = s * (u - 8). `weight_shape` holds [N, K];
`weight_g_idx`, where present, maps columns to groups as GPTQ's g_idx does.

How they reach the core: codes unpacked to uint8 [N, K] and scales to float32 [N, K / group]
("int" spec). A layer whose zero point is one constant (every symmetric scheme) becomes
w = s * (u - zero); otherwise the per-group zero becomes a min m = -s * z and w = s * u + m.
With fp16 or bf16 scales every one of those products is exact in fp32 (an 11- or 8-bit
significand times a 4-bit integer), so the core's weights are the exact products, which the
producers' fp16/bf16 dequantization equals after rounding to that dtype. fp32 scales with
per-group zeros would round s * u and s * z separately, so such a layer is held as INT8 codes
u - z + 128 with zero 128 instead: w = s * (u - z) rounded once, as the reference does in fp32.

Source groups need not be 32, 64 or 128 columns: each core group of 32/64/128 consecutive columns
must lie inside one source group (so group 256 and "channel" become 128 with the scale repeated).
Act-order GPTQ (desc_act) maps columns to groups through a permutation (g_idx), so the columns of
a group are not consecutive and no group-wise layout of the core holds them: such a layer is
dequantized exactly into a float32 weight (8x the memory of its INT4 form), and the load says so
once with a warning naming the layer count and the extra memory.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ModelFormatError

CORE_GROUPS = (128, 64, 32)  # the core's INT4 group sizes, largest (fewest scales) first

# AutoAWQ's interleave: nibble i of a qweight/qzeros word holds column AWQ_ORDER[i] of its 8.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_NIBBLE_OF_COLUMN = tuple(AWQ_ORDER.index(c) for c in range(8))  # = (0, 4, 1, 5, 2, 6, 3, 7)

AWQ_PARTS = ("qweight", "qzeros", "scales")
GPTQ_PARTS = ("qweight", "qzeros", "scales", "g_idx")
CT_PARTS = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")
# compressed-tensors tensors of activation quantization (W4A8 on GPUs); CPU activations stay fp32.
CT_SKIPPED = ("input_scale", "input_zero_point", "input_global_scale", "output_scale", "output_zero_point")


@dataclass
class Int4Layer:
    """One linear weight as its source defines it: w[n, k] = scales[n, g] * (codes[n, k] - zeros[n, g])
    with g = col_group[k]."""
    name: str               # the core's name for it, "<module>.weight"
    codes: np.ndarray       # uint8 [N, K], 0..15
    scales: np.ndarray      # float [N, G], the checkpoint's dtype
    zeros: np.ndarray       # integer [N, G]
    col_group: np.ndarray   # int64 [K], values in [0, G)
    act_order: bool         # col_group came from a g_idx that is not k // group


# ---------------------------------------------------------------------------------------------
# Unpacking

def nibbles(words: np.ndarray) -> np.ndarray:
    """int32 [..., W] -> uint8 [..., 8W]: element 8j + i is nibble i (bits 4i..4i+3) of word j."""
    # Little-endian bytes: byte b of a word holds nibbles 2b (low half) and 2b + 1 (high half).
    b = np.ascontiguousarray(words).astype("<i4", copy=False).view(np.uint8)
    out = np.empty(b.shape[:-1] + (2 * b.shape[-1],), np.uint8)
    out[..., 0::2] = b & 15
    out[..., 1::2] = b >> 4
    return out


# ---------------------------------------------------------------------------------------------
# Layers -> core specs

def _block_groups(col_group: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(core group size, source group of each core group): the largest core group size whose
    blocks of consecutive columns each lie inside one source group; None if there is none."""
    k = col_group.shape[0]
    for gc in CORE_GROUPS:
        starts = col_group[::gc]
        if np.array_equal(np.repeat(starts, gc)[:k], col_group):
            return gc, starts
    return None


def _exact_products(s32: np.ndarray) -> bool:
    """Whether s * i is exact in fp32 for every scale and every |i| <= 16: significands of at most
    20 bits (fp16 and bf16 scales always), i.e. the low 4 mantissa bits are zero."""
    return not np.any(s32.view(np.uint32) & 0xF)


def _dequantized(layer: Int4Layer) -> np.ndarray:
    """The layer's weight as float32 [N, K], each element s * (u - z) rounded once (exact for
    fp16/bf16 scales), a slab of rows at a time to bound the temporaries."""
    n, k = layer.codes.shape
    s32 = layer.scales.astype(np.float32)
    z = layer.zeros.astype(np.float32)
    g = layer.col_group
    out = np.empty((n, k), np.float32)
    for r in range(0, n, 256):
        rows = slice(r, r + 256)
        np.multiply(s32[rows][:, g], layer.codes[rows].astype(np.float32) - z[rows][:, g], out=out[rows])
    return out


def layer_spec(layer: Int4Layer, where: str) -> dict:
    """The core spec of one layer: INT4 (INT8 for fp32 scales with per-group zeros), or float32
    for an act-order layer."""
    n, k = layer.codes.shape
    mapped = _block_groups(layer.col_group)
    if mapped is None:
        if not layer.act_order:
            raise ModelFormatError(f"{where}: tensor {layer.name!r}: its groups of input columns are not "
                                   f"multiples of 32 columns, which the INT4 format needs (groups of "
                                   f"{', '.join(map(str, CORE_GROUPS))})")
        return {"format": "float", "data": _dequantized(layer), "releasable": True}
    gc, src = mapped
    s32 = np.ascontiguousarray(layer.scales[:, src].astype(np.float32))
    spec = {"format": "int", "bits": 4, "group": gc, "scales": s32, "mins": None, "releasable": True}
    z = layer.zeros[:, src]
    if z.size and z.min() == z.max():                   # one zero point: w = s * (u - zero), rounded once
        return {**spec, "codes": layer.codes, "zero": int(z.flat[0])}
    if _exact_products(s32):                            # per-group zeros as mins: w = s * u + m
        mins = -(s32 * z.astype(np.float32))
        return {**spec, "codes": layer.codes, "zero": 0, "mins": mins}
    # fp32 scales: u - z + 128 in 8 bits keeps w = s * (u - z) with one rounding, as the reference.
    codes8 = (layer.codes.astype(np.int16) - np.repeat(z, gc, axis=1)[:, :k] + 128).astype(np.uint8)
    return {**spec, "codes": codes8, "bits": 8, "zero": 128}


def _check(cond: bool, where: str, name: str, what: str) -> None:
    if not cond:
        raise ModelFormatError(f"{where}: tensor {name!r}: {what}")


def _float_scales(checkpoint, name: str, shape: tuple[int, int], where: str) -> np.ndarray:
    s = checkpoint.tensor(name)
    _check(s.dtype.kind == "f" or str(s.dtype) == "bfloat16", where, name, f"scales must be floats, got {s.dtype}")
    _check(tuple(s.shape) == shape, where, name, f"expected shape {list(shape)}, got {list(s.shape)}")
    return s


def _int32(checkpoint, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    t = checkpoint.tensor(name)
    _check(t.dtype == np.int32, where, name, f"expected packed int32 words, got {t.dtype}")
    _check(tuple(t.shape) == shape, where, name, f"expected shape {list(shape)}, got {list(t.shape)}")
    return t


def _groups(k: int, group: int) -> int:
    return -(-k // group)


def _col_group(checkpoint, name: str | None, k: int, group: int, n_groups: int, where: str) -> tuple[np.ndarray, bool]:
    """The group of each input column: k // group, or the checkpoint's g_idx where it has one."""
    default = np.arange(k, dtype=np.int64) // group
    if name is None:
        return default, False
    g = checkpoint.tensor(name)
    _check(g.dtype.kind in "iu", where, name, f"g_idx must be integers, got {g.dtype}")
    _check(tuple(g.shape) == (k,), where, name, f"expected shape [{k}], got {list(g.shape)}")
    g = g.astype(np.int64)
    _check(bool(np.all((g >= 0) & (g < n_groups))), where, name, f"group indices must lie in [0, {n_groups})")
    return g, not np.array_equal(g, default)


# ---------------------------------------------------------------------------------------------
# The three layouts

def _group_size(value, what: str, where: str) -> int | None:
    """A configured group size: a positive int, or None for -1 (one group spanning each row)."""
    if value == -1:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelFormatError(f"{where}: {what} group_size must be a positive integer or -1, got {value!r}")
    return value


def _bits(qconfig: dict, keys: tuple[str, ...], what: str, where: str) -> None:
    bits = next((qconfig[key] for key in keys if key in qconfig), None)
    if bits != 4:
        raise ModelFormatError(f"{where}: {what} checkpoints with {bits}-bit weights are not supported "
                               "(only 4-bit)")


def awq_reader(qconfig: dict, where: str) -> Callable:
    _bits(qconfig, ("bits", "w_bit"), "AWQ", where)
    version = str(qconfig.get("version", "gemm")).lower()
    if version != "gemm":
        raise ModelFormatError(f"{where}: AWQ version {version!r} is not supported (only 'gemm', "
                               "AutoAWQ's default packing)")
    group = _group_size(qconfig.get("group_size", qconfig.get("q_group_size")), "AWQ", where)

    def read(checkpoint, module: str) -> Int4Layer:
        name = module + ".qweight"
        qw = checkpoint.tensor(name)
        _check(qw.dtype == np.int32 and qw.ndim == 2, where, name,
               f"expected int32 [in, out / 8], got {qw.dtype} {list(qw.shape)}")
        k, n = qw.shape[0], 8 * qw.shape[1]
        g = group or k
        ng = _groups(k, g)
        qz = _int32(checkpoint, module + ".qzeros", (ng, n // 8), where)
        s = _float_scales(checkpoint, module + ".scales", (ng, n), where)
        by_column = np.array(AWQ_NIBBLE_OF_COLUMN)
        u = nibbles(qw).reshape(k, n // 8, 8)[:, :, by_column].reshape(k, n)
        z = nibbles(qz).reshape(ng, n // 8, 8)[:, :, by_column].reshape(ng, n)
        return Int4Layer(module + ".weight", np.ascontiguousarray(u.T), np.ascontiguousarray(s.T),
                         np.ascontiguousarray(z.T), np.arange(k, dtype=np.int64) // g, False)
    return read


def gptq_reader(qconfig: dict, where: str) -> Callable:
    _bits(qconfig, ("bits",), "GPTQ", where)
    fmt = qconfig.get("checkpoint_format", "gptq")
    if fmt not in ("gptq", "gptq_v2"):
        raise ModelFormatError(f"{where}: GPTQ checkpoint_format {fmt!r} is not supported ('gptq' or 'gptq_v2')")
    zero_offset = 1 if fmt == "gptq" else 0  # v1 stores z - 1
    group = _group_size(qconfig.get("group_size", -1), "GPTQ", where)

    def read(checkpoint, module: str) -> Int4Layer:
        name = module + ".qweight"
        qw = checkpoint.tensor(name)
        _check(qw.dtype == np.int32 and qw.ndim == 2, where, name,
               f"expected int32 [in / 8, out], got {qw.dtype} {list(qw.shape)}")
        k, n = 8 * qw.shape[0], qw.shape[1]
        _check(n % 8 == 0, where, name, f"{n} output columns do not pack into qzeros' words of 8")
        g = group or k
        ng = _groups(k, g)
        qz = _int32(checkpoint, module + ".qzeros", (ng, n // 8), where)
        s = _float_scales(checkpoint, module + ".scales", (ng, n), where)
        gidx = module + ".g_idx"
        col_group, act_order = _col_group(checkpoint, gidx if gidx in checkpoint else None, k, g, ng, where)
        u = nibbles(qw.T)                                  # [N, K]: word [r, n] holds k = 8r..8r+7
        z = nibbles(qz).T.astype(np.int16) + zero_offset   # [N, G]
        return Int4Layer(module + ".weight", u, np.ascontiguousarray(s.T), z, col_group, act_order)
    return read


def _ct_schemes(qconfig: dict, where: str) -> list[tuple[list, dict]]:
    groups = qconfig.get("config_groups") or {}
    if not groups:
        raise ModelFormatError(f"{where}: compressed-tensors pack-quantized config has no config_groups")
    out = []
    for gname, group in groups.items():
        group = group or {}
        w = group.get("weights") or {}
        if w.get("type") != "int" or w.get("num_bits") != 4:
            raise ModelFormatError(f"{where}: compressed-tensors config group {gname!r}: {w.get('num_bits')}-bit "
                                   f"{w.get('type')} weights are not supported (pack-quantized loads 4-bit int)")
        if group.get("format", "pack-quantized") != "pack-quantized":
            raise ModelFormatError(f"{where}: compressed-tensors config group {gname!r}: format "
                                   f"{group['format']!r} in a pack-quantized checkpoint is not supported")
        strategy = w.get("strategy")
        if strategy not in ("group", "channel"):
            raise ModelFormatError(f"{where}: compressed-tensors config group {gname!r}: strategy {strategy!r} "
                                   "is not supported for INT4 ('group' or 'channel')")
        if strategy == "group":
            _group_size(w.get("group_size"), f"compressed-tensors config group {gname!r}", where)
        out.append((list(group.get("targets") or []), w))
    return out


def _ct_scheme_of(module: str, schemes: list[tuple[list, dict]], where: str) -> dict:
    if len(schemes) == 1:
        return schemes[0][1]
    for targets, w in schemes:
        for t in targets:
            if t == "Linear" or t == module or (t.startswith("re:") and re.match(t[3:], module)):
                return w
    raise ModelFormatError(f"{where}: {module!r} is packed but no compressed-tensors config group targets it")


def compressed_tensors_reader(qconfig: dict, where: str) -> Callable:
    schemes = _ct_schemes(qconfig, where)

    def read(checkpoint, module: str) -> Int4Layer:
        w = _ct_scheme_of(module, schemes, where)
        name = module + ".weight_packed"
        packed = checkpoint.tensor(name)
        _check(packed.dtype == np.int32 and packed.ndim == 2, where, name,
               f"expected int32 [out, in / 8], got {packed.dtype} {list(packed.shape)}")
        shape_name = module + ".weight_shape"
        shape = checkpoint.tensor(shape_name)
        _check(shape.dtype.kind in "iu" and shape.shape == (2,), where, shape_name,
               f"expected 2 integers, got {shape.dtype} {list(shape.shape)}")
        n, k = int(shape[0]), int(shape[1])
        _check(packed.shape == (n, _groups(k, 8)), where, name,
               f"shape {list(packed.shape)} does not hold a [{n}, {k}] weight ([{n}, {_groups(k, 8)}] words)")
        g = w.get("group_size") if w["strategy"] == "group" else -1
        g = k if g == -1 else g                           # "channel": one group spans the row
        ng = _groups(k, g)
        s = _float_scales(checkpoint, module + ".weight_scale", (n, ng), where)
        u = nibbles(packed)[:, :k]
        zp_name = module + ".weight_zero_point"
        if w.get("symmetric", True):
            if zp_name in checkpoint and not _all_signed_zero(checkpoint.tensor(zp_name), n):
                raise ModelFormatError(f"{where}: tensor {zp_name!r} is not zero, but config group's weights "
                                       "are symmetric")
            z = np.full((n, ng), 8, np.int16)              # w = s * q = s * (u - 8)
        else:
            if zp_name not in checkpoint:
                raise ModelFormatError(f"{where}: {name!r} is asymmetric but has no {zp_name!r}")
            zp = _int32(checkpoint, zp_name, (_groups(n, 8), ng), where)
            z = np.ascontiguousarray(nibbles(zp.T)[:, :n].T)  # stored zp + 8: w = s * (u - z)
        gidx = module + ".weight_g_idx"
        col_group, act_order = _col_group(checkpoint, gidx if gidx in checkpoint else None, k, g, ng, where)
        return Int4Layer(module + ".weight", u, s, z, col_group, act_order)
    return read


def _all_signed_zero(zp: np.ndarray, n: int) -> bool:
    """A symmetric scheme's zero point, as some versions still store it: signed zeros, unpacked
    or packed (every nibble 8)."""
    if not np.any(zp):
        return True
    return zp.dtype == np.int32 and zp.ndim == 2 and bool(np.all(nibbles(zp.T)[:, :n] == 8))


# ---------------------------------------------------------------------------------------------
# A checkpoint -> the core's tensors

@dataclass(frozen=True)
class Layout:
    label: str                 # how errors and warnings name it
    packed: str                # the suffix that marks a quantized module
    required: tuple[str, ...]  # suffixes a quantized module cannot do without
    parts: tuple[str, ...]     # every suffix that belongs to a quantized module
    skipped: tuple[str, ...] = ()  # suffixes of tensors the CPU does not need


LAYOUTS = {
    "awq": (Layout("AWQ", "qweight", ("qzeros", "scales"), AWQ_PARTS), awq_reader),
    "gptq": (Layout("GPTQ", "qweight", ("qzeros", "scales"), GPTQ_PARTS), gptq_reader),
    "compressed-tensors": (Layout("compressed-tensors pack-quantized", "weight_packed",
                                  ("weight_scale", "weight_shape"), CT_PARTS, CT_SKIPPED),
                           compressed_tensors_reader),
}


def core_tensors(checkpoint, qconfig: dict, where: str) -> dict[str, dict]:
    """The checkpoint's tensors as core specs: each quantized module's weight in the INT4 format
    (float32 for act-order GPTQ layers), every other tensor as stored."""
    layout, make_reader = LAYOUTS[qconfig.get("quant_method")]
    read = make_reader(qconfig, where)
    names = set(checkpoint.keys())
    suffix = "." + layout.packed
    modules = sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))
    if not modules:
        raise ModelFormatError(f"{where}: a {layout.label} checkpoint, but no tensor ends in {suffix!r}")
    owned = {f"{m}.{p}" for m in modules for p in layout.parts}
    out: dict[str, dict] = {}
    fallback_layers, fallback_bytes = 0, 0
    for m in modules:
        for p in layout.required:
            if f"{m}.{p}" not in names:
                raise ModelFormatError(f"{where}: {m + suffix!r} has no {m + '.' + p!r}")
        if m + ".weight" in names:
            raise ModelFormatError(f"{where}: {m!r} has both a packed weight and a float {m + '.weight'!r}")
        layer = read(checkpoint, m)
        spec = layer_spec(layer, where)
        if spec["format"] == "float":
            fallback_layers += 1
            fallback_bytes += spec["data"].nbytes - (layer.codes.size // 2 + layer.scales.size * 4)
        out[m + ".weight"] = spec
    for name in sorted(names - owned):
        if name.endswith(tuple("." + p for p in layout.parts)):
            module = name.rsplit(".", 1)[0]
            raise ModelFormatError(f"{where}: tensor {name!r} has no {module + suffix!r} to belong to")
        if name.endswith(tuple("." + p for p in layout.skipped)):
            continue
        out[name] = {"format": "float", "data": checkpoint.tensor(name), "releasable": True}
    if fallback_layers:
        warnings.warn(f"{where}: {fallback_layers} {layout.label} layers group their input columns through an "
                      "act-order g_idx (desc_act), which the INT4 format cannot hold (its groups are "
                      "consecutive columns); they are loaded as exact float32 weights, "
                      f"{fallback_bytes / 2**20:.1f} MiB more than as INT4", stacklevel=4)
    return out


