"""The inference engine: model registry, loading, continuous batching, sampling. Free of HTTP and of ``db/``."""
