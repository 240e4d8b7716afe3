"""Helpers the tests share, one module per job, so no test module imports another: ports and in-process servers
(`net`), a real `llmws serve` and what end-to-end tests do with it (`live`), credentials (`access`), what the
access matrices share (`access_matrix`), the gateway's admin set-up (`gateway`), rate limits (`limits`), the
WebSocket channel's client side (`ws`), the native chat's SSE (`sse`), settings from a test's environment
(`settings`), the local engine's prompts and batch (`engine`) and git repositories to download models from
(`git_host`)."""
