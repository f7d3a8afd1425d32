"""Type stub of the compiled module llama_local._core (csrc/bindings.cpp).

The Llama forward pass (Model) and, in `kernels`, each CPU kernel for the tests; in `device_math`,
the CUDA kernels' shared host/device math (csrc/cuda/device_math.h, mma_frag.h, int4_layout.h,
attention_plan.h) run on the host, the INT4 GPU repack and flash attention's schedule. Array arguments typed ArrayLike are converted to the dtype
named in their comment (C-contiguous) on the way in; NDArray ones must already be numpy arrays. Errors in a model file or spec raise
llama_local.ModelFormatError, a prompt past n_ctx llama_local.ContextOverflowError.

tests/test_core_stub.py holds this file to the compiled module: every public name, and each
function's parameters, must match. Names with a leading underscore exist only here, for typing.
"""

from types import ModuleType
from typing import Any, Callable, TypedDict

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
# A weight as Model and kernels.Packed take it: a float32/float16/bfloat16 array, or a dict spec:
#   {"format": "gguf", "ggml_type": int, "data": uint8 blocks, "shape": [out, in]}
#   {"format": "int", "codes": uint8 [out, in], "scales": f32 [out, groups], "mins": f32 | None,
#    "bits": 4 | 8, "group": 32 | 64 | 128, "zero": int}
#   {"format": "fp8", "data": E4M3 codes [out, in], "scales": f32 [out] or [out, blocks], "block": int,
#    "act_ub": float (optional: activations are FP8 too, per token, scales bounded by it; inf: none)}
#   {"format": "float", "data": float array}
# each with optional "qk_heads" (undo llama.cpp's q/k row permutation) and "releasable".
_TensorSpec = npt.NDArray[Any] | dict[str, Any]

class _BuildInfo(TypedDict):
    version: str
    compiler: str
    isas_supported: list[str]
    best_isa: str
    physical_cores: int
    cuda_compiled: bool
    cuda_archs: str
    cuda_devices: int
    cuda_device_names: list[str]
    cuda_unavailable_reason: str | None

def build_info() -> _BuildInfo:
    """Version, ISAs and CUDA support of this build and machine."""

def default_isa() -> str:
    """The ISA models use: LLAMA_LOCAL_ISA if set, else the best this CPU supports."""

class Model:
    def __init__(
        self,
        config: dict[str, Any],
        tensors: dict[str, _TensorSpec],
        n_ctx: int,
        n_threads: int = 0,
        isa: str | None = None,
        n_batch: int = 512,
        kv_cache: str = "f16",
    ) -> None:
        """config: ModelConfig.core_dict() (sizes, rms_norm_eps, tie_word_embeddings, inv_freq);
        tensors: Hugging Face name -> weight. n_threads 0: one per physical core. kv_cache: the KV
        cache's format, f16, bf16, q8_0 or f32 (ValueError otherwise)."""
    def forward(self, tokens: npt.ArrayLike, start_pos: int | None = None, all_logits: bool = False) -> _F32:
        """Evaluate tokens (int32, 1-D) at positions [start_pos or n_past, ...), append them to the
        KV cache, and return float32 logits: [vocab] for the last token, or [T, vocab] with all_logits."""
    def observe_inputs(self, tokens: npt.ArrayLike, observer: Callable[[int, int, _F32], None]) -> None:
        """Evaluate tokens from position 0, calling observer(layer, which, x[T, K]) with each decoder
        layer's linear inputs: which 0 = q/k/v, 1 = o, 2 = gate/up, 3 = down."""
    def reset(self) -> None: ...
    def truncate(self, n: int) -> None: ...
    @property
    def n_past(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def isa(self) -> str: ...
    @property
    def weight_bytes(self) -> int: ...
    @property
    def weight_formats(self) -> list[tuple[str, int]]:
        """[(format, bytes)] of the weights as held, e.g. [('Q4_K', ...), ('f32', ...)]."""
    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV cache at n_ctx positions (committed as positions are used)."""
    @property
    def kv_cache(self) -> str: ...
    @property
    def scratch_bytes(self) -> int: ...

class _QuantizedActs(TypedDict):
    q: npt.NDArray[np.int8]  # codes [M, Kp]
    d: _F32  # block scales [M, Kp / 32]
    s: _F32  # half-block sums [M, Kp / 16]
    isum: npt.NDArray[np.int32]  # half-block code sums [M, Kp / 16]
    r: npt.NDArray[np.int8]  # residual codes [M, Kp]
    flags: npt.NDArray[np.uint64]  # residual blocks, bit sets [M, words]

class CudaModel:
    """The forward pass on the GPU, with Model's interface; present only in CUDA builds
    (build_info()["cuda_compiled"]). Weights become INT4 tiles or 16-bit rows on the device
    (device_math.gpu_weight), the KV cache 16-bit in the compute type (bf16 on sm_80+)."""

    def __init__(self, config: dict[str, Any], tensors: dict[str, _TensorSpec], n_ctx: int,
                 n_batch: int = 512, cuda_graphs: bool = True) -> None:
        """cuda_graphs: replay each decode step (one token with its logits) as a CUDA graph."""
    def forward(self, tokens: npt.ArrayLike, start_pos: int | None = None, all_logits: bool = False) -> _F32:
        """As Model.forward."""
    def reset(self) -> None: ...
    def truncate(self, n: int) -> None: ...
    @property
    def n_past(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_threads(self) -> int: ...
    @property
    def isa(self) -> str: ...
    @property
    def weight_bytes(self) -> int: ...
    @property
    def weight_formats(self) -> list[tuple[str, int]]: ...
    @property
    def kv_bytes(self) -> int: ...
    @property
    def kv_cache(self) -> str: ...
    @property
    def scratch_bytes(self) -> int: ...
    @property
    def decode_graphs(self) -> int:
        """Decode-step CUDA graphs captured so far (one per flash-decode split count met)."""
    @property
    def decode_graph_error(self) -> str:
        """Why decode-step graphs were turned off (a capture failed); empty if they were not."""

class _Kernels(ModuleType):
    """The submodule `kernels`: each CPU kernel, for tests against numpy. `isa` None: default_isa()."""

    FP8_BF16_MIN_ROWS: int
    """Activation rows from which the avx512bf16 FP8 product rounds them to bf16 (fewer stay fp32)."""

    class Packed:
        """A weight built from a spec exactly as the model builds it."""

        def __init__(self, spec: dict[str, Any], n_threads: int = 1) -> None: ...
        def dequantize(self, isa: str | None = None) -> _F32:
            """The weight as float32 [out, in]."""
        def matmul(
            self,
            x: npt.ArrayLike,
            isa: str | None = None,
            n_threads: int = 1,
            accumulate_into: npt.ArrayLike | None = None,
        ) -> _F32:
            """x [M, in] float32 . W^T -> [M, out]."""
        def time_matmul(
            self, M: int, isa: str | None = None, n_threads: int = 1, iters: int = 10, repeats: int = 5
        ) -> float:
            """Seconds per product with M activation rows (micro-benchmark)."""
        @property
        def format(self) -> str: ...
        @property
        def nbytes(self) -> int: ...
        @property
        def layout(self) -> str: ...

    @staticmethod
    def matmul(
        x: npt.ArrayLike,
        w: npt.NDArray[Any],
        isa: str | None = None,
        n_threads: int = 1,
        accumulate_into: npt.ArrayLike | None = None,
    ) -> _F32:
        """x [M, K] float32 . w [N, K]^T (w float32/float16/bfloat16) -> [M, N]."""
    @staticmethod
    def rmsnorm(x: npt.ArrayLike, w: npt.ArrayLike, eps: float, isa: str | None = None) -> _F32:
        """x [M, n], w [n], float32."""
    @staticmethod
    def rope(x: npt.ArrayLike, cos: npt.ArrayLike, sin: npt.ArrayLike, isa: str | None = None) -> _F32:
        """x [T, H, hd]; cos, sin [T, hd / 2]; float32."""
    @staticmethod
    def swiglu(gate: npt.ArrayLike, up: npt.ArrayLike, isa: str | None = None) -> _F32:
        """gate [n], up [n], float32."""
    @staticmethod
    def gemm_nn(a: npt.ArrayLike, b: npt.ArrayLike, isa: str | None = None) -> _F32:
        """a [M, K] . b [K, N], float32 (b's rows may be strided)."""
    @staticmethod
    def softmax(s: npt.ArrayLike, scale: float = 1.0, isa: str | None = None) -> _F32:
        """s [n] float32, non-empty."""
    @staticmethod
    def attention(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, p0: int = 0, kv_cache: str = "f32",
                  isa: str | None = None, n_threads: int = 1, splits: int = 0) -> _F32:
        """Causal flash attention of q [T, H, hd] at positions [p0, p0 + T) over k, v [p0 + T, KH, hd]
        held in a KV cache of format kv_cache; splits > 0 forces that many ranges per KV head."""
    @staticmethod
    def time_attention(T: int, depth: int, n_heads: int, n_kv_heads: int, head_dim: int, kv_cache: str = "f16",
                       isa: str | None = None, n_threads: int = 1, n_layers: int = 16, repeats: int = 5) -> float:
        """Seconds per attention call of T queries at depth `depth` over a KV cache of n_layers
        layers (micro-benchmark: each call streams its layer's K and V)."""
    @staticmethod
    def encode_kv(x: npt.ArrayLike, kv_cache: str) -> tuple[npt.NDArray[np.uint8], _F32]:
        """(stored rows as bytes, the values they hold as float32) of x [rows, kv_dim]."""
    @staticmethod
    def to_f32(w: npt.NDArray[Any], isa: str | None = None) -> _F32:
        """A float32/float16/bfloat16 array, flattened to float32."""
    @staticmethod
    def quantize_acts(x: npt.ArrayLike, isa: str | None = None) -> _QuantizedActs:
        """x [M, K] float32 -> the int8 blocks the integer kernels take."""

kernels: _Kernels

class _DeviceMath(ModuleType):
    """The submodule `device_math`: csrc/cuda's __host__ __device__ functions, run on the host."""

    @staticmethod
    def e4m3_to_float(codes: npt.ArrayLike) -> _F32:
        """E4M3 codes (uint8) -> float32, exact (NaN for S.1111.111)."""
    @staticmethod
    def float_to_e4m3(x: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """float32 -> E4M3 codes: nearest, ties to even, saturating at +-448, NaN kept."""
    @staticmethod
    def float_to_bf16(x: npt.ArrayLike) -> npt.NDArray[np.uint16]:
        """float32 -> bf16 bit patterns: nearest, ties to even."""
    @staticmethod
    def int4_dequant(packed: npt.ArrayLike, scale: float, zero: int) -> _F32:
        """uint32 words of 8 nibbles (low nibble first) -> scale * (q - zero), 8 per word."""
    @staticmethod
    def softmax_merge(m: npt.ArrayLike, l: npt.ArrayLike, o: npt.ArrayLike) -> tuple[float, float, _F32]:
        """Online-softmax partials (m [S], l [S], o [S, D]) merged in order -> (m, l, o / l)."""
    @staticmethod
    def mma_fragment(shape: str, operand: str) -> npt.NDArray[np.int32]:
        """[32, n, 2]: the (row, col) in the operand's tile of each lane's value i ('a', 'b', 'c';
        shape 'm16n8k16' or 'm16n8k32')."""
    @staticmethod
    def int4_repack(codes: npt.ArrayLike, scales: npt.ArrayLike, group: int, mins: npt.ArrayLike | None = None,
                    zero: int = 0, dtype: str = "bf16", name: str = "weight") -> _Int4Gpu:
        """INT4 codes u [N, K] (uint8, 0..15) and float32 scales (and mins) [N, groups] -> the GPU
        layout of csrc/cuda/int4_layout.h; dtype 'bf16' or 'fp16' (the scales' and the kernel's
        type). Bad shapes, codes, zero points or scales raise ModelFormatError naming `name`."""
    @staticmethod
    def int4_fragments(q: npt.ArrayLike, scales: npt.ArrayLike, mins: npt.ArrayLike | None, n: int, k: int,
                       group: int, zero: int, dtype: str) -> npt.NDArray[np.uint32]:
        """The kernel's B fragments of every tile and lane, from int4_repack's buffers: uint32
        [n_tiles, k_tiles, 32 lanes, 8 sub-tiles, 2 registers] of 16-bit pairs (low half first)."""
    @staticmethod
    def splitk_range(k_stages: int, splits: int, split: int) -> tuple[int, int]:
        """[begin, end) of the k stages that split-K block `split` of `splits` takes."""
    @staticmethod
    def int4_gemm_plan(m: int, n: int, k: int, group: int, sms: int) -> _GemmPlan:
        """The W4A16 GEMM's launch for X [m, k] . W [n, k]^T on a GPU with `sms` SMs."""
    @staticmethod
    def gpu_weight(parts: list[Any], outs: list[int], in_features: int, dtype: str = "bf16") -> dict[str, Any]:
        """What weight specs (as Model takes them) stacked along the output become on the GPU:
        {format, int4, fp8, out, and rows: uint16 [out, ld] 16-bit bits, or q, scales:
        int4_repack's or fp8_repack's flat buffers; fp8 (the 8-bit GEMM's tiles) also act_ub, the
        parts' shared bound of per-token FP8 activation scales (0: W8A16), int8: the codes are
        signed integers (GGUF Q8_0 / Q5_0 / Q6_K, 8-bit checkpoints), not E4M3, and mins: each
        block's min in the scales' layout (GGUF Q5_K / Q5_1), or None}."""
    @staticmethod
    def gpu_weight_pieces(parts: list[Any], outs: list[int], in_features: int,
                          dtype: str = "bf16") -> list[dict[str, Any]]:
        """The products the engine runs for the same parts: gpu_weight's dicts for each run of
        neighbouring parts that share a quantized form (or have none: 16-bit rows), in row order."""
    @staticmethod
    def bf16_gemm_plan(m: int, n: int, k: int, sms: int) -> _GemmPlan:
        """The 16-bit-weight GEMM's launch for X [m, k] . W [n, k]^T on a GPU with `sms` SMs."""
    @staticmethod
    def b16_chunks() -> npt.NDArray[np.int32]:
        """[512, 2]: the (row, k) of the 16-byte chunk each copy of a 16-bit GEMM stage moves."""
    @staticmethod
    def int4_tile_coords() -> npt.NDArray[np.int32]:
        """[32 lanes, 4 words, 8 nibbles, 2]: the (k, n) in a 16 x 64 tile of each nibble of a
        lane's 128-bit load."""
    @staticmethod
    def fp8_k_of_slot() -> npt.NDArray[np.int32]:
        """[32]: the k (within a 32-k tile) whose E4M3 code W8A8 stores at each slot
        (csrc/cuda/fp8_layout.h)."""
    @staticmethod
    def fp8_quantize_rows(x: npt.ArrayLike, ub: float | None = None) -> tuple[npt.NDArray[np.uint8], _F32]:
        """Dynamic per-token E4M3: float32 x [M, K] -> (codes uint8 [M, ceil(K/32)*32] in slot order,
        zeros past K; scales [M] = max(min(absmax, ub) / 448, 2^-126)); ub None: no bound."""
    @staticmethod
    def fp8_repack(codes: npt.ArrayLike, scales: npt.ArrayLike, block: int = 0, name: str = "weight",
                   int8: bool = False, mins: npt.ArrayLike | None = None) -> _Fp8Gpu:
        """E4M3 codes [N, K] (uint8; int8: signed integer codes' bytes) and float32 scales
        [N, blocks] (block <= 0 or >= K: one per row) -> the GPU layout of csrc/cuda/fp8_layout.h;
        with int8, mins [N, blocks] (w = scale code + min) go into the scales' layout. Bad shapes,
        blocks (not a multiple of 32), NaN E4M3 codes, non-finite scales or mins, or mins where
        the kernels take none raise ModelFormatError naming `name`."""
    @staticmethod
    def fp8_fragments(q: npt.ArrayLike, n: int, k: int, block: int, kind: str,
                      int8: bool = False) -> npt.NDArray[np.uint32]:
        """The kernels' B fragments of every tile, lane and sub-tile from fp8_repack's q: kind
        'e4m3' -> uint32 [n_tiles, k_tiles, 32, 8, 2] (m16n8k32 registers); 'bf16' / 'fp16' ->
        [n_tiles, k_tiles, 32, 8, 2 k16 steps, 2 registers] of 16-bit pairs (int8: expanded from
        integer codes)."""
    @staticmethod
    def fp8_lane_scales(scales: npt.ArrayLike, n: int, k: int, block: int, int8: bool = False) -> _F32:
        """[n_tiles, blocks, 32 lanes, 16]: the scales each lane reads from fp8_repack's scales."""
    @staticmethod
    def fp8_gemm_plan(m: int, n: int, k: int, block: int, sms: int, path: str,
                      int8: bool = False) -> _Fp8GemmPlan:
        """The FP8 GEMM's launch for X [m, k] . W [n, k]^T on a GPU with `sms` SMs, path 'w8a8' or
        'w8a16' (int8: integer codes, whose blocks may also be 16 columns)."""
    @staticmethod
    def ldmatrix_x4(layout: str) -> npt.NDArray[np.int32]:
        """[32 lanes, 4 registers, 2 halves, 2]: the (row, col) of the row-major shared-memory tile
        each lane's register half gets from ldmatrix.x4 at mma_frag.h's addresses: 'a' (A, 16 x
        k16), 'b_nk' (B stored [n][k]), 'b_kn' (B stored [k][n], with .trans)."""
    @staticmethod
    def c_to_a() -> npt.NDArray[np.int32]:
        """[8, 2]: for m16n8k16's A value i, the n8 C tile (0, 1) and its value that become it."""
    @staticmethod
    def fa_split(n_pos: int, n_splits: int) -> npt.NDArray[np.int32]:
        """[n_splits, 2]: the flash-decoding position ranges [begin, end) of one KV head."""
    @staticmethod
    def fa_num_splits(n_pos: int, n_kv_heads: int, n_sms: int) -> int:
        """Flash-decoding's ranges per KV head for a GPU with n_sms SMs."""
    @staticmethod
    def fa_smem_offsets(rows: int, cols: int) -> npt.NDArray[np.int32]:
        """[rows, cols]: each K/V tile element's offset (16-bit elements) in shared memory."""
    @staticmethod
    def rmsnorm(x: npt.ArrayLike, w: npt.ArrayLike, eps: float) -> _F32:
        """small_ops_math.h's RMSNorm of each row of float32 x [T, D] with w [D], sums in order."""
    @staticmethod
    def rope(x: npt.ArrayLike, cos: npt.ArrayLike, sin: npt.ArrayLike) -> _F32:
        """small_ops_math.h's RoPE of each row of float32 x [n, hd] (pairs i, i + hd/2), cos and sin
        [n, hd/2]."""
    @staticmethod
    def silu_mul(g: npt.ArrayLike, u: npt.ArrayLike) -> _F32:
        """small_ops_math.h's silu(g) * u, elementwise over the flattened float32 arrays."""
    @staticmethod
    def flash_attention(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, p0: int, n_heads: int,
                        n_kv_heads: int, splits: int = 0, n_sms: int = 132) -> _F32:
        """flash_attn.cu's schedule in fp32 on the host (float32 q [T, H*hd], k and v [p0+T, KH*hd])
        -> [T, H*hd]: causal GQA attention of positions [p0, p0+T); T == 1 takes the decode schedule
        (splits 0: fa_num_splits for n_sms)."""

class _Int4Gpu(TypedDict):
    q: npt.NDArray[np.uint32]  # [n_tiles, k_tiles, 32, 4]
    scales: npt.NDArray[np.uint16]  # [n_tiles, groups, 64]: bf16 or fp16 bits
    mins: npt.NDArray[np.uint16] | None
    n_tiles: int
    k_tiles: int
    groups: int
    tiles_per_group: int

class _GemmPlan(TypedDict):
    m_frags: int  # 16-row A fragments per block
    splits: int  # split-K factor
    grid_n: int
    grid_m: int
    k_stages: int  # stages of 32 k
    stage_ranges: list[tuple[int, int]]  # [begin, end) of each split
    min_blocks: int  # blocks per SM the kernel's register budget is built for

class _Fp8Gpu(TypedDict):
    q: npt.NDArray[np.uint32]  # [n_tiles, k_tiles, 4 chunks, 32, 4]
    scales: _F32  # [n_tiles, blocks, 64]
    mins: _F32 | None  # the same layout; int8 codes with mins only
    n_tiles: int
    k_tiles: int
    block: int
    blocks: int
    tiles_per_block: int

class _Fp8GemmPlan(TypedDict):
    m_frags: int  # 16-row A fragments per block
    splits: int  # split-K factor
    grid_n: int
    grid_m: int
    k_stages: int  # 32-k tiles
    stage_ranges: list[tuple[int, int]]  # [begin, end) of each split
    folds: list[list[int]]  # per split: the k tiles after which partial sums are scaled into the totals
    step_blocks: bool  # 16-column blocks: each k16 step's sums take their own block's scales instead

device_math: _DeviceMath

class _CudaKernels(ModuleType):
    """The submodule `cuda_kernels`, present only in CUDA builds (build_info()["cuda_compiled"]):
    each CUDA kernel run once on host data, for the GPU tests."""

    @staticmethod
    def int4_gemm(x: npt.ArrayLike, codes: npt.ArrayLike, scales: npt.ArrayLike, group: int,
                  mins: npt.ArrayLike | None = None, zero: int = 0, dtype: str = "bf16",
                  splits: int = 0) -> npt.NDArray[np.uint16]:
        """x [M, K] (bf16 or fp16 bits, uint16) . W^T on the GPU, W given as device_math.int4_repack
        takes it; splits 0: int4_gemm_plan's choice -> y [M, N] bits of the same type."""
    @staticmethod
    def fp8_gemm(x: npt.ArrayLike, codes: npt.ArrayLike, scales: npt.ArrayLike, block: int = 0,
                 path: str = "w8a8", dtype: str = "bf16", splits: int = 0,
                 ub: float | None = None, int8: bool = False,
                 mins: npt.ArrayLike | None = None) -> npt.NDArray[np.uint16]:
        """x [M, K] (bf16 or fp16 bits, uint16) . W^T on the GPU, W given as device_math.fp8_repack
        takes it: path 'w8a8' (bf16 x quantized per row to E4M3 on the device, absmax bound ub) or
        'w8a16' (int8: W's codes are signed integers, with each block's min if mins are given);
        splits 0: fp8_gemm_plan's choice -> y [M, N] bits of x's type."""
    @staticmethod
    def fp8_quantize(x: npt.ArrayLike, ub: float | None = None) -> tuple[npt.NDArray[np.uint8], _F32]:
        """W8A8's activation quantization on the GPU: x [M, K] bf16 bits -> (codes [M,
        ceil(K/32)*32] in slot order, scales [M]), as device_math.fp8_quantize_rows on the host."""
    @staticmethod
    def flash_attention(q: npt.ArrayLike, k: npt.ArrayLike, v: npt.ArrayLike, p0: int, n_heads: int,
                        n_kv_heads: int, dtype: str = "bf16", splits: int = 0) -> npt.NDArray[np.uint16]:
        """Causal GQA attention on the GPU: q [T, H*hd], k and v [p0+T, KH*hd] (bf16 or fp16 bits,
        uint16) -> [T, H*hd] bits; T == 1 is flash-decoding with `splits` ranges (0: the GPU's choice)."""
    @staticmethod
    def rmsnorm(x: npt.ArrayLike, w: npt.ArrayLike, eps: float, dtype: str = "bf16") -> npt.NDArray[np.uint16]:
        """RMSNorm on the GPU: float32 x [T, D], w [D] -> [T, D] 16-bit bits."""
    @staticmethod
    def rope(x: npt.ArrayLike, n_heads: int, cos: npt.ArrayLike, sin: npt.ArrayLike, p0: int,
             dtype: str = "bf16") -> npt.NDArray[np.uint16]:
        """RoPE on the GPU of x [T, H*hd] (16-bit bits), rows at positions p0 + t of the float32
        cos and sin tables [positions, hd/2] -> the same shape."""
    @staticmethod
    def swiglu(gu: npt.ArrayLike, dtype: str = "bf16") -> npt.NDArray[np.uint16]:
        """silu(gate) * up on the GPU: gu [T, 2F] (gate columns first, bits) -> [T, F] bits."""
    @staticmethod
    def residual_add(x: npt.ArrayLike, y: npt.ArrayLike, dtype: str = "bf16") -> _F32:
        """float32 x [T, D] + 16-bit y [T, D] (bits) on the GPU."""
    @staticmethod
    def embed(table: npt.ArrayLike, tokens: npt.ArrayLike, dtype: str = "bf16") -> _F32:
        """Rows `tokens` (int32 [T]) of a 16-bit table [V, D] (bits) on the GPU -> float32 [T, D]."""
    @staticmethod
    def kv_append(k: npt.ArrayLike, v: npt.ArrayLike, n_kv_heads: int, n_ctx: int, p0: int) -> npt.NDArray[np.uint16]:
        """K and V rows [T, KH*hd] (bits) appended at p0 to a zero device cache -> [2, KH, n_ctx, hd]."""
    @staticmethod
    def bf16_gemm(x: npt.ArrayLike, w: npt.ArrayLike, dtype: str = "bf16", y_f32: bool = False,
                  splits: int = 0) -> _F32:
        """x [M, K] . w [N, K]^T on the GPU (16-bit bits, uint16) -> y [M, N] float32 (fp32 output
        when y_f32, else the 16-bit output widened exactly); splits 0: bf16_gemm_plan's choice."""
    @staticmethod
    def device_spec() -> dict[str, Any]:
        """The current GPU: name, sms, compute_capability, sm_clock_ghz, mem_spec_gbps (datasheet)
        and copy_gbps (a measured 1 GiB device-to-device copy, bytes read + written)."""
    @staticmethod
    def time_bf16_gemm(m: int, n: int, k: int, bf16: bool = True, y_f32: bool = False, iters: int = 20,
                       repeats: int = 5, splits: int = 0) -> float:
        """Seconds per 16-bit-weight product X [m, k] . W [n, k]^T, inputs made on the device once;
        splits 0: bf16_gemm_plan's choice."""
    @staticmethod
    def time_int4_gemm(m: int, n: int, k: int, group: int, bf16: bool = True, iters: int = 20,
                       repeats: int = 5, splits: int = 0) -> float:
        """Seconds per W4A16 product X [m, k] . W [n, k]^T, inputs made on the device once;
        splits 0: int4_gemm_plan's choice."""
    @staticmethod
    def time_flash_attention(t: int, p0: int, n_heads: int, n_kv_heads: int, head_dim: int, bf16: bool = True,
                             iters: int = 20, repeats: int = 5) -> float:
        """Seconds per flash attention call of t query rows after p0 cached positions."""

cuda_kernels: _CudaKernels
