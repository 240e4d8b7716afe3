"""Helpers the tests share, one module per job, so no test module imports another: ports and in-process servers
(`net`), a real `llmws serve` and what end-to-end tests do with it (`live`), credentials (`access`), the gateway's
admin set-up (`gateway`) and a git host to download models from (`git_host`)."""
