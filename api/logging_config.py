"""Logs to the console (readable) and to a rotating file in ``<data_dir>/logs`` (one JSON object a line)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

from api.settings import Settings
from db.private_files import private_file, private_folder

LOG_FILE = "llmws.log"
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _TolerantFileHandler(logging.handlers.RotatingFileHandler):
    """A full disk or a vanished log folder must not stop serving: drop the line, keep going."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass

    def _open(self):  # noqa: ANN202 (logging's signature)
        # Owner-only, the first file and each one a rotation starts: the logs quote conversations and users.
        private_file(Path(self.baseFilename))
        return super()._open()


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_llmws", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(settings.log_level)

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [console]
    try:
        private_folder(settings.data_dir)  # first, or creating the logs folder would make it with the umask's mode
        private_folder(settings.logs_dir)
        file_handler = _TolerantFileHandler(settings.logs_dir / LOG_FILE, maxBytes=MAX_LOG_BYTES,
                                            backupCount=LOG_BACKUPS, encoding="utf-8")
        file_handler.setFormatter(JsonLineFormatter())
        handlers.append(file_handler)
    except OSError as exc:
        print(f"llmws: not logging to a file ({exc}); console only", file=sys.stderr)
    for handler in handlers:
        handler._llmws = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # Alembic announces its dialect each time /readyz reads the revision; only its warnings matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Uvicorn's own loggers propagate to ours instead of printing twice.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
