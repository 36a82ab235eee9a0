"""Reading a request body in one piece, never more than the payload limit and never cut short.

- A Content-Length above the limit is refused from the header (app.py) before any of the body is read.
- With a Content-Length, gunicorn's length reader is read directly: its `wsgi.input` hands a body over
  1 KiB at a time and re-buffers the socket chunk it read after every KiB (a 200 KB CSV cost ~2 ms there,
  more than parsing it). Any other WSGI server (the flask test client included) takes werkzeug's path.
- Without one (`Transfer-Encoding: chunked`, which SDK clients and proxies send), the body is read up to
  one byte past the limit: a longer body is a 413, like an oversized Content-Length. (werkzeug's own
  limit stops at the cap without raising: it silently dropped the rows past it.)
- After a refusal (or any answer given before the body was read) the server still has to take the rest
  of the body off the wire, or a client that is still sending gets a connection reset instead of the
  answer: gunicorn's post_request hook drains it (`drain_or_close`).
"""

from __future__ import annotations

import socket
from typing import IO

from flask import request
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.errors import ParseException

from optml.serve.errors import RequestError, bad_request

READ_SIZE = 1 << 20  # per read of a chunked body
# The most of a refused body the server reads and discards so that the client sees the 413: SageMaker's
# own ceiling for any payload (MaxPayloadInMB <= 100). A client sending more gets a reset connection.
DRAIN_LIMIT_BYTES = 100 << 20


def payload_too_large(limit: int) -> RequestError:
    return RequestError(
        413, "request_entity_too_large", f"request body is larger than the {limit} bytes this endpoint accepts"
    )


def read_body(limit: int) -> bytes:
    """The current request's body, at most `limit` bytes; a longer one raises a 413."""
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if length is None:
        if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
            return b""  # neither Content-Length nor chunked: a request without a body (RFC 9112, 6.3)
        if "wsgi.input_terminated" not in request.environ:
            # A server that leaves chunked framing to the app: werkzeug's safe fallback, an empty body.
            return request.get_data(cache=False)
        return _read_chunked(request.input_stream, limit)
    if length > limit:
        raise payload_too_large(limit)
    if length and isinstance(stream, Body) and isinstance(stream.reader, LengthReader) and not stream.buf.tell():
        try:
            body: bytes = stream.reader.read(length)
        except OSError as error:  # the client reset the connection or stalled past the socket timeout
            raise bad_request(f"the request body could not be read ({error}); Content-Length said {length}") from None
        if len(body) != length:
            raise bad_request(f"the request body ended after {len(body)} bytes; Content-Length said {length}")
        return body
    return request.get_data(cache=False)  # werkzeug reads up to the Content-Length


def _read_chunked(stream: IO[bytes], limit: int) -> bytes:
    """A chunked body, read until it ends or passes `limit`."""
    pieces: list[bytes] = []
    size = 0
    try:
        while piece := stream.read(min(READ_SIZE, limit + 1 - size)):
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                raise payload_too_large(limit)
    except (OSError, ParseException) as error:  # a reset, a stall, or broken chunk framing
        raise bad_request(f"the chunked request body could not be read ({error})") from None
    return b"".join(pieces)


def drain(body: Body | None) -> bool:
    """Read and discard what is left of a request body, up to DRAIN_LIMIT_BYTES. False when the body was
    longer (or could not be read): the connection must not be used again."""
    if body is None or not isinstance(body.reader, LengthReader | ChunkedReader):
        return True  # no framed body: nothing to wait for (an EOF reader would block until the client closes)
    if isinstance(body.reader, LengthReader) and body.reader.length > DRAIN_LIMIT_BYTES:
        return False  # its Content-Length says it is longer than what would be drained: shut at once
    drained = 0
    try:
        while piece := body.read(READ_SIZE):
            drained += len(piece)
            if drained > DRAIN_LIMIT_BYTES:
                return False
    except (OSError, ParseException):
        return False
    return True


def drain_or_close(req: object) -> None:
    """gunicorn's post_request hook, after the answer is sent: the unread rest of a refused body is taken off
    the wire, so a client still sending reads the 413 rather than a reset; beyond the drain limit the
    connection is shut instead (multi-model's keep-alive workers would otherwise read it all)."""
    if not drain(getattr(req, "body", None)):
        sock = getattr(getattr(req, "unreader", None), "sock", None)
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
