"""The pages' bodies and their view state (``param.Parameterized``, testable without a browser)."""
