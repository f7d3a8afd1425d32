"""llama_local: a local runtime for the Llama 3.x family.

    llm = llama_local.LLM("path/to/model")          # HF directory, Meta original/, or .gguf
    for chunk in llm.generate("Once upon a time", max_tokens=64):
        print(chunk.text, end="", flush=True)

Built with Llama.
"""

from .errors import ContextOverflowError, LlamaLocalError, ModelFormatError, UnsafeCheckpointError

__version__ = "0.1.0"

__all__ = [
    "LLM", "ChatSession", "Tokenizer", "system_info",
    "LlamaLocalError", "ModelFormatError", "UnsafeCheckpointError", "ContextOverflowError",
    "__version__",
]


def __getattr__(name):
    # Lazy so that `import llama_local` stays cheap and the pure-Python parts (tokenizer,
    # chat formats, converters) work without loading the compiled core.
    if name == "LLM":
        from .llm import LLM
        return LLM
    if name == "ChatSession":
        from .chat.session import ChatSession
        return ChatSession
    if name == "Tokenizer":
        from .tokenizer.tokenizer import Tokenizer
        return Tokenizer
    if name == "system_info":
        from .llm import system_info
        return system_info
    raise AttributeError(f"module 'llama_local' has no attribute {name!r}")
