"""`reidnet serve` itself: a busy port is refused before anything is created, its help reads as
written at any width, and the server it starts refuses request heads over 64 KiB (issue 30)."""

from __future__ import annotations

import socket
import subprocess

import httpx
from typer.testing import CliRunner

from live_server import reidnet_command
from reidnet.cli import app


def test_a_busy_port_is_one_line_naming_it_and_leaves_no_data_folder(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        done = subprocess.run(
            reidnet_command("serve", "--data-dir", str(data_dir), "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use by another program: stop it, or give "
        "another port with --port"
    ]
    assert not data_dir.exists()  # neither the folder nor its database was made


def test_the_help_breaks_no_paragraph_where_the_terminal_has_room():
    result = CliRunner().invoke(
        app, ["serve", "--help"], env={"COLUMNS": "200"}, terminal_width=200
    )
    assert result.exit_code == 0, result.output
    description = result.output.split("Options")[0].split("Usage: reidnet serve [OPTIONS]")[1]
    lines = [line.strip() for line in description.splitlines() if line.strip(" │╭─")]
    assert len(lines) >= 2
    assert all(line.endswith(".") for line in lines), lines  # each paragraph whole on its line


# -- the request head: its line and headers at most 64 KiB (REIDNET_MAX_HEADER_BYTES) ----------

HEAD_LIMIT = 64 * 1024


def raw_request(server, payload: bytes) -> bytes:
    """Send `payload` as is and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(payload)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_1_mib_header_is_431_and_a_normal_request_is_still_answered(server):
    refused = httpx.get(f"{server.url}/api/v1/health", headers={"X-Big": "a" * (1 << 20)})
    assert refused.status_code == 431
    assert "over 65536 bytes" in refused.json()["detail"]
    assert "REIDNET_MAX_HEADER_BYTES" in refused.json()["detail"]
    assert httpx.get(f"{server.url}/api/v1/health").status_code == 200


def head_of(padding: int) -> bytes:
    """A request head of 54 + `padding` bytes as the limit counts them: GET (3), the path (14),
    then per header its name, ": ", its value and CRLF: Host (9), Connection (19), X-Pad (9)."""
    return (
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
        + b"a" * padding
        + b"\r\n\r\n"
    )


def test_the_limit_counts_the_request_line_and_every_header(server):
    at_the_limit = raw_request(server, head_of(HEAD_LIMIT - 54))
    assert at_the_limit.startswith(b"HTTP/1.1 200 "), at_the_limit[:200]
    one_byte_over = raw_request(server, head_of(HEAD_LIMIT - 53))
    assert one_byte_over.startswith(b"HTTP/1.1 431 "), one_byte_over[:200]


def test_a_head_that_never_ends_is_answered_431_once_past_the_limit(server):
    unfinished = head_of(1 << 20)[: -len(b"\r\n\r\n")]  # the header goes on: no end of head
    answer = raw_request(server, unfinished)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b"over 65536 bytes" in answer
