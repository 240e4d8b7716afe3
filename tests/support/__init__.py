"""Helpers the tests share, one module per job, so no test module imports another: ports and servers in this
process (`net`), the app in process (`in_process`), a real `llmws serve` and what end-to-end tests do with it
(`live`), credentials (`access`), what the access matrices share (`access_matrix`), the gateway's admin set-up
(`gateway`), rate limits (`limits`), the WebSocket channel's client side (`ws`), the native chat's SSE (`sse`),
settings from a test's environment (`settings`) and the local engine's prompts and batch (`engine`); fakes of what
LLMWS talks to: git repositories and a git host (`git_host`), a Hugging Face hub (`fake_hub`), an OpenAI upstream
that records what reached it (`recording_upstream`) and an OTLP trace receiver (`otlp_receiver`)."""
