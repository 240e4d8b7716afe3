"""Business logic over ``db/``: no HTTP here; failures are ``ServiceError`` subclasses that ``api.errors`` maps."""
