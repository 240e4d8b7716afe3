"""``panel serve`` with LLMWS's security headers on every HTTP answer (pages, the login page, static files).

Panel's ``serve`` command is a Bokeh subcommand whose ``customize_kwargs`` is the documented place to change what
the server is built with; the keyword arguments reach tornado's ``Application``, whose output ``transforms`` see
every response. ``llmws ui`` runs ``python -m ui.serve <panel serve arguments>``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from panel.command.serve import Serve
from tornado.httputil import HTTPHeaders
from tornado.web import GZipContentEncoding, OutputTransform

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # no UI page inside someone else's frame (clickjacking)
    # Bokeh renders with inline scripts and styles and compiles some code at run time, hence 'unsafe-inline' and
    # 'unsafe-eval', and Panel loads modules from blob: URLs; everything else stays on this server. Above all
    # `img-src`: a chat answer's Markdown must not load a remote image, whose URL would carry what a prompt
    # injection put in it.
    "Content-Security-Policy": "; ".join((
        "default-src 'self'", "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:", "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:", "font-src 'self' data:", "connect-src 'self'", "object-src 'none'",
        "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'")),
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders(OutputTransform):
    """Adds ``SECURITY_HEADERS`` to each response, leaving alone any a handler set itself."""

    def transform_first_chunk(self, status_code: int, headers: HTTPHeaders, chunk: bytes, finishing: bool
                              ) -> tuple[int, HTTPHeaders, bytes]:
        for name, value in SECURITY_HEADERS.items():
            if name not in headers:
                headers[name] = value
        return status_code, headers, chunk


class SecureServe(Serve):
    def customize_kwargs(self, args: argparse.Namespace, server_kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().customize_kwargs(args, server_kwargs)
        # Given ``transforms``, tornado uses them instead of its defaults: keep its gzip when it was asked for.
        compress = kwargs.get("compress_response") or kwargs.get("gzip")
        kwargs["transforms"] = [*([GZipContentEncoding] if compress else []), SecurityHeaders]
        return kwargs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.serve", description="panel serve, with security headers")
    command = SecureServe(parser=parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = command.invoke(args)
    return 1 if result is False else 0


if __name__ == "__main__":
    sys.exit(main())
