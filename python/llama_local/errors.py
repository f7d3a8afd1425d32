"""Exception classes of llama_local.

Every error a user can cause (a bad file, a bad argument, a prompt that does not fit) is one of
these, with a message that names what was wrong and where. The compiled core raises the same
classes: bindings.cpp registers C++ exceptions that pybind11 translates into them.
"""


class LlamaLocalError(Exception):
    """Base class of every error raised by llama_local."""


class ModelFormatError(LlamaLocalError, ValueError):
    """A model file or directory is missing, truncated, or not what it claims to be."""


class UnsafeCheckpointError(ModelFormatError):
    """A checkpoint asks to run code or build objects that a weights file has no need for."""


class ContextOverflowError(LlamaLocalError, ValueError):
    """The tokens do not fit the model's context (n_ctx)."""
