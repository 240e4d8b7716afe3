"""Rate-limit counters shared by every replica: requests and tokens per subject (a key or a user) per minute."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base


class RateWindow(Base):
    __tablename__ = "rate_windows"

    subject: Mapped[str] = mapped_column(String(40), primary_key=True)  # "key:12", "user:3"
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # Unix time // 60
    requests: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
