"""LLM: the public entry point. Loads a model, evaluates logits, streams generations, chats.

Python decides what to run (which tokens, how to sample, when to stop); one call into the
compiled core per step runs every layer (see DESIGN.md, "The shape").
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .config import ModelConfig
from .errors import ContextOverflowError, LlamaLocalError, ModelFormatError
from .formats.memory_plan import check_kv_cache
from .formats.safetensors_io import Checkpoint
from .sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, Sampler, SamplingParams
from .streaming import IncrementalDecoder, StopStringMatcher


DEFAULT_N_CTX = 4096


@dataclass
class Chunk:
    """One sampled token of a generation.

    text is the new text this token completes (may be "" while a UTF-8 character or a possible
    stop string is held back). finish_reason is None except on the last chunk: "stop" (a stop
    token or stop string) or "length". A stop token's chunk carries its id and no text of its
    own: only whatever was still held back, usually "".
    """
    text: str
    token_id: int
    finish_reason: str | None = None


def _core():
    from . import _core as core
    return core


def system_info() -> dict[str, Any]:
    """What this build and machine offer: ISA in use, threads, CUDA compiled/available, version."""
    from . import __version__
    core = _core()
    b = core.build_info()
    try:
        isa, isa_error = core.default_isa(), None
    except ValueError as e:  # a bad LLAMA_LOCAL_ISA
        isa, isa_error = None, str(e)
    info = {
        "version": __version__,
        "isa": isa,
        "isas_supported": list(b["isas_supported"]),
        "isa_override": os.environ.get("LLAMA_LOCAL_ISA") or None,
        "threads_default": b["physical_cores"],
        "cuda_compiled": b["cuda_compiled"],
        "cuda_archs": b["cuda_archs"],
        "cuda_available": b["cuda_devices"] > 0,
        "cuda_devices": list(b["cuda_device_names"]),
        "cuda_unavailable_reason": b["cuda_unavailable_reason"],
        # Whether this build has the forward pass on the GPU (device="cuda"; "auto" takes it when a
        # GPU is available too).
        "cuda_backend": hasattr(core, "CudaModel"),
        "compiler": b["compiler"],
    }
    if isa_error:
        info["isa_error"] = isa_error
    return info


def open_model(path: str | os.PathLike, progress: bool = True):
    """(directory with config.json and the tokenizer files, the weights) for any accepted input:
    a path, or a model name found in the Hugging Face cache or the Ollama store (formats/locate.py).

    A .gguf file is read in place (only its small side files are cached); a Meta original/
    directory is converted once into a cache; a Hugging Face directory is used as it is."""
    from .formats.locate import is_gguf_file, resolve_model
    p = resolve_model(path)
    if p.is_file():
        if p.suffix.lower() == ".gguf" or is_gguf_file(p):
            from .formats.gguf_weights import GGUFWeights, side_files_dir
            weights = GGUFWeights(p)
            return side_files_dir(weights), weights
        raise ModelFormatError(f"{p}: expected a model directory or a .gguf file")
    if not (p / "config.json").is_file():
        from .formats.meta_original import ensure_converted_meta, find_original_dir
        original = find_original_dir(p)
        if original is None:
            raise ModelFormatError(
                f"{p}: not a model directory (expected config.json + *.safetensors, a Meta original/ "
                "directory with params.json, or a .gguf file)")
        p = ensure_converted_meta(original, progress=progress)
    return p, Checkpoint(p)


def check_n_ctx(n_ctx: int | str | None) -> int | str | None:
    if n_ctx is None or n_ctx == "max":
        return n_ctx
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx <= 0:
        raise ValueError(f"n_ctx must be a positive integer or 'max', got {n_ctx!r}")
    return n_ctx


def context_size(n_ctx: int | str | None, max_positions: int, allow_beyond_trained_context: bool = False) -> int:
    """The n_ctx to run with: None is DEFAULT_N_CTX or the model's max_position_embeddings if
    smaller, "max" is max_position_embeddings; past it is refused unless asked for."""
    if check_n_ctx(n_ctx) is None:
        return min(DEFAULT_N_CTX, max_positions)
    if n_ctx == "max":
        return max_positions
    if n_ctx > max_positions and not allow_beyond_trained_context:
        raise ValueError(f"n_ctx={n_ctx:,} is past the model's trained context (max_position_embeddings="
                         f"{max_positions:,}); pass allow_beyond_trained_context=True "
                         "(--allow-beyond-trained-context) to use it anyway")
    return n_ctx


class LLM:
    """A loaded model.

    n_ctx: the context in tokens; None (default) is 4096 or the model's max_position_embeddings if
    smaller, "max" is max_position_embeddings. More than that is refused unless
    allow_beyond_trained_context=True. kv_cache: the KV cache dtype, one of "f16" (default),
    "bf16", "q8_0" (int8 in blocks of 32 with an fp16 scale, as llama.cpp's), "f32"; its memory
    is committed only as positions are used. `tokens_left` tells how much of n_ctx is still free.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", n_ctx: int | str | None = None,
                 n_threads: int | None = None, n_batch: int = 512, isa: str | None = None,
                 progress: bool = True, kv_cache: str = "f16", allow_beyond_trained_context: bool = False):
        if device not in ("cpu", "auto", "cuda"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
        use_cuda = False
        if device in ("cuda", "auto"):
            info = system_info()
            use_cuda = info["cuda_available"] and info["cuda_backend"]
            if device == "cuda" and not use_cuda:
                why = info["cuda_unavailable_reason"] or "this build has no CUDA forward pass"
                raise LlamaLocalError(f"device='cuda' is not available: {why}")
        check_n_ctx(n_ctx)  # bad arguments fail before the model loads
        check_kv_cache(kv_cache)
        if use_cuda and kv_cache not in ("f16", "bf16"):
            raise ValueError(f"kv_cache={kv_cache!r} is CPU-only: on the GPU the KV cache is 16-bit "
                             "(bf16 on sm_80 and newer, f16 before)")
        self.device = "cuda" if use_cuda else "cpu"
        self.source = Path(path)
        self.path, self.weights = open_model(path, progress=progress)
        if not Path(path).expanduser().exists():
            self.model_name = str(path).removeprefix("ollama:")  # a name found in a model store
        elif self.source.is_file():
            self.model_name = self.source.stem
        else:
            self.model_name = self.source.name
        self.config = ModelConfig.load(self.path)
        n_ctx = context_size(n_ctx, self.config.max_position_embeddings, allow_beyond_trained_context)
        if self.config.quantization_config:
            from .formats import quantized_checkpoints
            tensors = quantized_checkpoints.core_tensors(self.weights, self.config.quantization_config,
                                                         f"{self.path}/config.json")
        else:
            tensors = self.weights.core_tensors()
        # Why device="auto" runs on the CPU although a GPU is there (a model the CUDA kernels do not
        # take, e.g. head_dim other than 64 or 128); None otherwise.
        self.cuda_fallback_reason: str | None = None
        self.model = None
        if use_cuda:
            try:
                # LLAMA_LOCAL_CUDA_GRAPHS=0 launches each decode step's kernels one by one instead
                # of replaying a graph (to compare, or to rule graphs out when debugging).
                graphs = os.environ.get("LLAMA_LOCAL_CUDA_GRAPHS", "1") != "0"
                self.model = _core().CudaModel(self.config.core_dict(), tensors, n_ctx, n_batch=n_batch,
                                               cuda_graphs=graphs)
            except ModelFormatError as e:
                if device == "cuda":
                    raise
                self.cuda_fallback_reason = str(e)
                self.device = "cpu"
        if self.model is None:
            self.model = _core().Model(self.config.core_dict(), tensors, n_ctx,
                                       n_threads=n_threads or 0, isa=isa, n_batch=n_batch, kv_cache=kv_cache)
        from .tokenizer.tokenizer import Tokenizer
        self.tokenizer = Tokenizer.load(self.path)
        self.generation_defaults = self._generation_defaults()
        self._cached: list[int] = []   # token ids whose keys/values the KV cache holds
        self._generation = 0           # bumped by each generate(); older generators stop
        self.last_stats: dict[str, float] = {}

    # ---- evaluation ----

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    @property
    def tokens_left(self) -> int:
        """Positions of n_ctx not yet used: n_ctx minus the tokens the KV cache holds (the last
        prompt and what was generated after it, kept so that a next prompt extending them is not
        prefilled again). A prompt that does not extend them reuses only their common prefix."""
        return self.n_ctx - self.model.n_past

    def reset(self) -> None:
        """Empty the KV cache (tokens_left is n_ctx again); running generators stop."""
        self._generation += 1
        self.model.reset()
        self._cached = []

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 [len(token_ids), vocab]: the logits at every position, from a fresh context."""
        ids = self._check_ids(token_ids)
        self._generation += 1
        self._cached = []
        out = self.model.forward(ids, start_pos=0, all_logits=True)
        self._cached = ids.tolist()
        return out

    def _check_ids(self, token_ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(list(token_ids), dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("token_ids must be a non-empty list of ints")
        bad = np.flatnonzero((ids < 0) | (ids >= self.config.vocab_size))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"token id {int(ids[i])} at position {i} is outside the vocabulary "
                             f"[0, {self.config.vocab_size})")
        if ids.size > self.n_ctx:
            raise ContextOverflowError(f"{ids.size} tokens do not fit the context (n_ctx={self.n_ctx})")
        return ids.astype(np.int32)

    def _eval(self, ids: list[int]) -> np.ndarray:
        """Logits after `ids`, reusing the longest cached prefix (at least one token is evaluated)."""
        common = 0
        for a, b in zip(self._cached, ids):
            if a != b:
                break
            common += 1
        start = min(common, len(ids) - 1)
        self.last_stats["reused_tokens"] = start
        self._cached = self._cached[:start]
        logits = self.model.forward(np.asarray(ids[start:], dtype=np.int32), start_pos=start)
        self._cached = list(ids)
        return logits

    # ---- generation ----

    def _generation_defaults(self) -> dict[str, Any]:
        d: dict[str, Any] = {"temperature": DEFAULT_TEMPERATURE, "top_p": DEFAULT_TOP_P}
        path = self.path / "generation_config.json"
        if path.is_file():
            try:
                g = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
            if g.get("do_sample") is False:
                d["temperature"] = 0.0
            for key in ("temperature", "top_p", "top_k", "min_p"):
                if isinstance(g.get(key), (int, float)):
                    d[key] = g[key]
            if isinstance(g.get("repetition_penalty"), (int, float)):
                d["repeat_penalty"] = g["repetition_penalty"]
        return d

    def sampling_params(self, **overrides: Any) -> SamplingParams:
        """The model's defaults with every non-None override applied."""
        merged = dict(self.generation_defaults)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**merged).validate()

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            # A raw completion prompt is the caller's own text: special tokens written in it are
            # honoured, as llama.cpp does. Chat messages go through the chat template instead.
            return self.tokenizer.encode(prompt, bos=self.tokenizer.add_bos_token, allow_special=True)
        return [int(t) for t in prompt]

    def generate(self, prompt_or_ids: str | Sequence[int], max_tokens: int = 256,
                 temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, min_p: float | None = None,
                 repeat_penalty: float | None = None, seed: int | None = None,
                 stop: str | Sequence[str] | None = None,
                 stop_token_ids: Sequence[int] | None = None) -> Iterator[Chunk]:
        """Stream one Chunk per sampled token as soon as it is sampled.

        stop_token_ids=None stops on the model's end-of-sequence ids; [] never stops early.
        Stopping the generator early (break, close()) leaves the model usable.
        """
        ids = self.encode_prompt(prompt_or_ids)
        self._check_ids(ids)
        if len(ids) >= self.n_ctx:
            raise ContextOverflowError(f"the prompt has {len(ids)} tokens; no room left to generate "
                                       f"in n_ctx={self.n_ctx}")
        if not isinstance(max_tokens, int) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
        params = self.sampling_params(temperature=temperature, top_p=top_p, top_k=top_k,
                                      min_p=min_p, repeat_penalty=repeat_penalty, seed=seed)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        stop_ids = (set(self.tokenizer.eos_token_ids) | set(self.config.eos_token_ids)
                    if stop_token_ids is None else {int(t) for t in stop_token_ids})
        self._generation += 1
        return self._generate(ids, max_tokens, Sampler(params), stops, stop_ids, self._generation)

    def _generate(self, ids: list[int], max_tokens: int, sampler: Sampler, stops: list[str],
                  stop_ids: set[int], generation: int) -> Iterator[Chunk]:
        max_tokens = min(max_tokens, self.n_ctx - len(ids))
        # reused_tokens: the prompt's prefix whose keys/values were already cached (not prefilled).
        stats = {"prompt_tokens": len(ids), "reused_tokens": 0, "completion_tokens": 0,
                 "prefill_s": 0.0, "decode_s": 0.0}
        self.last_stats = stats
        if max_tokens == 0:
            return
        t0 = time.perf_counter()
        logits = self._eval(ids)
        stats["prefill_s"] = time.perf_counter() - t0
        decoder = IncrementalDecoder(self.tokenizer, ids)
        matcher = StopStringMatcher(stops)
        history = list(ids)
        for n in range(1, max_tokens + 1):
            if generation != self._generation:
                raise LlamaLocalError("this generator was superseded by a newer call on the same LLM")
            t1 = time.perf_counter()
            token = sampler(logits, history)
            stats["completion_tokens"] = n
            if token in stop_ids:
                tail = matcher.flush() + decoder.flush()
                yield Chunk(tail, token, "stop")
                return
            text, stopped = matcher.push(decoder.push(token))
            if stopped:
                yield Chunk(text, token, "stop")
                return
            if n == max_tokens:
                text += matcher.flush() + decoder.flush()
                yield Chunk(text, token, "length")
                return
            stats["decode_s"] += time.perf_counter() - t1
            yield Chunk(text, token)
            t1 = time.perf_counter()
            history.append(token)
            logits = self.model.forward(np.array([token], dtype=np.int32))
            self._cached.append(token)
            stats["decode_s"] += time.perf_counter() - t1

    def chat(self, messages: list[dict[str, Any]], stream: bool = False,
             tools: list[dict[str, Any]] | None = None, **sampling: Any):
        """OpenAI-style chat completion using the model's chat template (or Meta's Llama 3.1
        format). Returns a chat.completion dict, or with stream=True yields chunk dicts."""
        from .chat.completion import chat_completion
        return chat_completion(self, messages, tools=tools, stream=stream, **sampling)

    # ---- description ----

    def info(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": self.model_name,
            "path": str(self.path),
            "architecture": "llama",
            "parameters": c.n_params(),
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "layers": c.num_hidden_layers,
            "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads,
            "head_dim": c.head_dim,
            "rope_theta": c.rope_theta,
            "rope_scaling": c.rope_scaling,
            "tie_word_embeddings": c.tie_word_embeddings,
            "source": str(self.source),
            "source_bytes": self.weights.nbytes(),
            "weight_formats": dict(self.model.weight_formats),
            "max_position_embeddings": c.max_position_embeddings,
            "n_ctx": self.n_ctx,
            "tokens_left": self.tokens_left,
            "n_threads": self.model.n_threads,
            "isa": self.model.isa,
            "weight_bytes": self.model.weight_bytes,
            "kv_cache": self.model.kv_cache,
            "kv_cache_bytes": self.model.kv_bytes,
            "scratch_bytes": self.model.scratch_bytes,
            "device": self.device,
            "cuda_fallback_reason": self.cuda_fallback_reason,
            # why the GPU's decode steps run launch by launch (a CUDA graph capture failed); None if not
            "cuda_graph_error": getattr(self.model, "decode_graph_error", "") or None,
        }

    def __repr__(self) -> str:
        return (f"LLM({str(self.source)!r}, n_ctx={self.n_ctx}, kv_cache={self.model.kv_cache!r}, "
                f"n_threads={self.model.n_threads})")
