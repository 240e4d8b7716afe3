"""The OpenAI protocol: its routes, schemas, the gateway's fast path, the adapter to the chat core, and the
forwarding of alias requests to upstreams (as vLLM keeps it in `entrypoints/openai/`)."""
