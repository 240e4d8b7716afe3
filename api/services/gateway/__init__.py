"""The gateway: providers and aliases, choosing a deployment, upstream adapters, runners."""
