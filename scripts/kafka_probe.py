#!/usr/bin/env python3
"""Exit 0 if a Kafka-compatible broker answers an ApiVersions request at HOST:PORT.

Standard library only, so it works on a fresh machine before anything is
installed. Used by setup.sh to tell "our broker is up" from "something else
holds the port".
"""
import socket
import struct
import sys


def probe(host: str, port: int, timeout: float = 2.0) -> bool:
    client_id = b"ferry-setup"
    # ApiVersions (key 18), version 0, correlation id 7.
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(4)
            if len(head) < 4:
                return False
            size = struct.unpack(">i", head)[0]
            data = b""
            while len(data) < min(size, 4):
                chunk = s.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
            return struct.unpack(">i", data[:4])[0] == 7
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if probe(sys.argv[1], int(sys.argv[2])) else 1)
