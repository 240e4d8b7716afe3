"""The local models: the host that serves them, switching, deleting and downloading them."""
