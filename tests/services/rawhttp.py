"""Requests botocore will not send: a PUT whose body is cut short.

The request is signed by botocore's own SigV4 signer (with an unsigned
payload, as streaming clients do), then written to a plain socket with a
Content-Length larger than the bytes that follow, and the connection is
closed: exactly what a client that crashes mid-upload leaves behind.
"""

from __future__ import annotations

import socket
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.services.s3client import S3Endpoint


def truncated_put(
    endpoint: S3Endpoint, bucket: str, key: str, *, declared: int, sent: int
) -> bytes:
    """Send ``sent`` of ``declared`` body bytes, close, return the server's answer (if any)."""
    assert sent < declared
    url = f"{endpoint.url}/{bucket}/{quote(key, safe='/~')}"
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={"Content-Length": str(declared), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    creds = Credentials(endpoint.access_key_id, endpoint.secret_access_key)
    S3SigV4Auth(creds, "s3", endpoint.region).add_auth(request)
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    head = f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host")
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode() + b"\r\n" + b"x" * sent)
        sock.shutdown(socket.SHUT_WR)  # the client "dies": no more body will come
        sock.settimeout(60)  # a hang guard only: servers answer or close at once
        return _read_response(sock)


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP response (or what came before the server closed)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
