"""The WebSocket channel (`/v1/ws`): transport (framing, sequence numbers, buffer, resume) over the services the
HTTP routes use."""
