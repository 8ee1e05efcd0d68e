"""Every limit and default of the exapyte fault proxy, named in one place.

Units are in the name (``_bytes``, ``_ms``, ``_s``, ``_chunks``). Values that mirror the reference
Toxiproxy 2.x server say so; the others are exapyte's own choices.
"""

from __future__ import annotations

# --- HTTP API ----------------------------------------------------------------------------------
API_HOST_DEFAULT = "127.0.0.1"  # the reference server defaults to "localhost"
API_PORT_DEFAULT = 8474  # same as the reference server
API_VERSION = "2.12.0+exapyte"  # the API level this server implements, reported by GET /version
HANDLER_TIMEOUT_S = 25.0  # a handler still running after this gets a 503 (reference behaviour)
HTTP_HEADER_BYTES_MAX = 1024 * 1024  # request line plus headers, give or take one read (h11's
# max_incomplete_event_size; the reference server's limit is also 1 MiB)
HTTP_BODY_BYTES_MAX = 16 * 1024 * 1024  # a request body larger than this is refused with 413
HTTP_IDLE_TIMEOUT_S = 60.0  # a keep-alive connection idle this long is closed
HTTP_READ_TIMEOUT_S = 15.0  # time allowed to receive one whole request once it has begun
HTTP_READ_CHUNK_BYTES = 64 * 1024  # one read() from an API connection
HTTP_CLOSE_LINGER_S = 2.0  # after the last reply, unread input is discarded this long, then close
HTTP_ERROR_DETAIL_CHARS_MAX = 200  # a refusal's body names the parse error in at most this much

# --- data plane --------------------------------------------------------------------------------
READ_CHUNK_BYTES_MAX = 32 * 1024  # one chunk is one read() of at most this many bytes
STAGE_BUFFER_CHUNKS = 1  # chunks queued in front of an ordinary toxic stage
LATENCY_BUFFER_CHUNKS = 1024  # chunks queued in front of a latency stage (reference value)
BANDWIDTH_SLICE_S = 0.1  # bandwidth sends large chunks as rate*100-byte pieces every 100 ms
LISTEN_BACKLOG = 1024

# --- finding or starting a server ---------------------------------------------------------------
SERVER_START_TIMEOUT_S = 10.0  # wait this long for GET /version to answer after a spawn
SERVER_STOP_TIMEOUT_S = 5.0  # then SIGKILL
SERVER_BINARY_NAME = "toxiproxy-server"
