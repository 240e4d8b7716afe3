"""Pieces shared by the API's schemas."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

Item = TypeVar("Item")


class RequestBody(BaseModel):
    """A request body: unknown fields are an error naming the field, never silently dropped."""

    model_config = ConfigDict(extra="forbid", str_max_length=100_000)


class ResponseBody(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ListOut(BaseModel, Generic[Item]):
    """A page of a list: ``data`` in a stable order, from ``offset``, at most ``limit`` items."""

    data: list[Item]
    offset: int
    limit: int
