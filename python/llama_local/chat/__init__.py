"""Chat: the OpenAI-shaped completion layer, Llama 3.1's format and tool calls, HF templates."""
