"""Request and response bodies of the REST API (pydantic); requests refuse unknown fields."""
