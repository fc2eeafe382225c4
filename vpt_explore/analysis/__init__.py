"""Analysis: read-only probes of a model (tokens, attention, [CLS] per layer), attributions, and
figures (each function returns a matplotlib Figure). Modules import their heavy packages lazily."""
