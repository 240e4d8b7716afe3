"""The Panel UI: a client of the API over httpx only (never imports ``db/`` or ``engine/``)."""
