"""The chat core: one protocol-neutral description of a turn (`turn`), its sampling with one precedence
(`sampling`), prompt assembly and trimming (`prompt`), the local engine's side of it (`local`) and the output stage
that turns a backend's events into the turn's result (`output`). The protocols (native chat, the WebSocket, the
OpenAI endpoints) translate their wire formats into a `Turn` and the results back, and nothing else."""
