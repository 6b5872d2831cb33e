"""Logging set-up: structlog for our events, stdlib logging (botocore, aiohttp,
aiokafka) routed through the same renderer, one line per event.

- Not on a terminal (a service, a pipe): JSON lines, tracebacks as dicts.
- On a terminal: readable, coloured lines.
- Nothing secret, ever (invariant 7): tracebacks never render local variables
  (structlog's dict and rich tracebacks do by default, and a local may hold
  a credential); botocore / aiobotocore DEBUG logging is never enabled (it
  prints the signed Authorization header); fields whose *name* says secret
  (password, token, secret, authorization, credential) are masked.

The module is ``logs`` so it never shadows the stdlib ``logging``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.dev import ConsoleRenderer, RichTracebackFormatter
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

#: Libraries whose DEBUG (and chatty INFO) output must never reach the log:
#: botocore's DEBUG prints request headers, Authorization included.
QUIET_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3")
_SECRET_NAME = re.compile(r"secret|password|passwd|token|authorization|credential", re.I)
REDACTED = "[redacted]"

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask every field whose name says it holds a secret."""
    for name in event_dict:
        if _SECRET_NAME.search(name):
            event_dict[name] = REDACTED
    return event_dict


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def _renderer(json: bool) -> list[Processor]:
    if json:
        # show_locals=False: a traceback's frames may hold credentials.
        dict_tracebacks = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        return [dict_tracebacks, structlog.processors.JSONRenderer()]
    formatter = RichTracebackFormatter(show_locals=False)
    return [ConsoleRenderer(exception_formatter=formatter)]


def configure(
    level: str = "info", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Set up structlog and the stdlib root logger for the whole process.

    ``json`` defaults to "``stream`` is not a terminal"; ``stream`` to stderr."""
    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = not stream.isatty()
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        known = ", ".join(LEVELS)
        raise ValueError(f"log level {level!r} is not one of {known}")
    renderer = _renderer(json)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared(),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        # Never DEBUG, whatever the requested level: Authorization headers.
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
