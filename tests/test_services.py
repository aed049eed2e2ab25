"""The services CI must provide are there (PostgreSQL, RabbitMQ on 127.0.0.1).

These speak each service's own protocol, so a wrong listener on the port does not pass.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tests.conftest import require_service

pytestmark = pytest.mark.services


def test_postgresql_answers_its_protocol() -> None:
    host, port = require_service("postgresql")
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert conn.recv(1) in (b"S", b"N")


def test_rabbitmq_answers_amqp() -> None:
    host, port = require_service("rabbitmq")
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"AMQP\x00\x00\x09\x01")
        frame = conn.recv(7)
        assert frame[:1] == b"\x01"  # a method frame: connection.start
