"""Usage and limits: metering a request, the limits checked before it, the writer, logs and reports."""
