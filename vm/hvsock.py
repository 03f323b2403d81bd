#!/usr/bin/env python3
"""Reach a guest vsock port through a hybrid vsock unix socket and call grpc.Health.

A hybrid vsock socket, such as the uds-path of vhost-device-vsock 0.3.0, forwards a
connection to a guest port after the client sends "CONNECT <port>\\n" and the VMM
replies "OK <host port>\\n".

Subcommands:
  wait    retry the CONNECT handshake until the guest port accepts or a timeout expires
  health  send one ttRPC grpc.Health.Check (or Version) request and print the response

Only the Python standard library is used, so the host needs no protobuf package. The
messages are encoded by hand from the field numbers of ttRPC's request and response
messages and of the Kata agent API's health.proto.
"""

import argparse
import os
import socket
import struct
import sys
import time

TTRPC_HEADER = struct.Struct(">IIBB")
TTRPC_TYPE_REQUEST = 1
TTRPC_TYPE_RESPONSE = 2
# ttrpc 0.10 rejects messages over 4 MiB (MESSAGE_LENGTH_MAX), so a larger length means
# the stream is not ttRPC.
TTRPC_MAX_MESSAGE = 4 << 20
# Streams that a client opens have odd ids.
STREAM_ID = 1

SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING"}

# Exit codes: 0 success, 1 the agent replied with an error or an unexpected result,
# 2 bad usage, 3 the agent could not be reached before the timeout.
EXIT_UNEXPECTED = 1
EXIT_UNREACHABLE = 3


class HandshakeError(Exception):
    """The hybrid vsock socket rejected or dropped the CONNECT request."""


class ProtocolError(Exception):
    """The guest sent bytes that are not the expected ttRPC response."""


def connect(path, port, timeout):
    """Open the unix socket at PATH and complete the CONNECT handshake for PORT."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b"CONNECT %d\n" % port)
        reply = read_line(sock)
    except BaseException:
        sock.close()
        raise

    if not reply.startswith(b"OK "):
        sock.close()
        raise HandshakeError(f"CONNECT {port} on {path}: reply {reply!r}, expected 'OK <port>'")
    return sock


def read_line(sock):
    """Read one newline-terminated line byte by byte, so no ttRPC byte is consumed."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise HandshakeError(f"connection closed after {bytes(line)!r}, before the reply line ended")
        line += byte
        if len(line) > 64:
            raise HandshakeError(f"reply line longer than 64 bytes: {bytes(line)!r}")
    return bytes(line).rstrip(b"\n")


def read_exact(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProtocolError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


# --- protobuf wire format ---------------------------------------------------------


def encode_varint(value):
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_bytes_field(number, data):
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + data


def encode_varint_field(number, value):
    return encode_varint(number << 3 | 0) + encode_varint(value)


def decode_varint(data, offset):
    value = 0
    shift = 0
    while True:
        if offset >= len(data):
            raise ProtocolError("protobuf varint runs past the end of the message")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift >= 64:
            raise ProtocolError("protobuf varint longer than 10 bytes")


def decode_fields(data):
    """Decode a protobuf message into {field number: [values]}.

    Varints become ints, and length-delimited and fixed-size fields become bytes.
    """
    fields = {}
    offset = 0
    while offset < len(data):
        key, offset = decode_varint(data, offset)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, offset = decode_varint(data, offset)
        elif wire_type == 2:
            length, offset = decode_varint(data, offset)
            if offset + length > len(data):
                raise ProtocolError(f"field {number} runs past the end of the message")
            value = data[offset:offset + length]
            offset += length
        elif wire_type == 1:
            value = data[offset:offset + 8]
            offset += 8
        elif wire_type == 5:
            value = data[offset:offset + 4]
            offset += 4
        else:
            raise ProtocolError(f"field {number} has unsupported wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


# --- ttRPC --------------------------------------------------------------------------


def encode_request(service, method, payload, timeout_nano):
    """Encode ttrpc.Request{service=1, method=2, payload=3, timeout_nano=4}."""
    return (
        encode_bytes_field(1, service.encode())
        + encode_bytes_field(2, method.encode())
        + encode_bytes_field(3, payload)
        + encode_varint_field(4, timeout_nano)
    )


def call(sock, service, method, payload, timeout_nano):
    """Send one ttRPC request on STREAM_ID and return (status code, message, payload)."""
    request = encode_request(service, method, payload, timeout_nano)
    sock.sendall(TTRPC_HEADER.pack(len(request), STREAM_ID, TTRPC_TYPE_REQUEST, 0) + request)

    length, stream_id, message_type, _flags = TTRPC_HEADER.unpack(read_exact(sock, TTRPC_HEADER.size))
    if length > TTRPC_MAX_MESSAGE:
        raise ProtocolError(f"response length {length} exceeds the ttRPC maximum {TTRPC_MAX_MESSAGE}")
    body = read_exact(sock, length)
    if stream_id != STREAM_ID or message_type != TTRPC_TYPE_RESPONSE:
        raise ProtocolError(
            f"expected a response (type {TTRPC_TYPE_RESPONSE}) on stream {STREAM_ID}, "
            f"got type {message_type} on stream {stream_id}"
        )

    # ttrpc.Response{status=1 google.rpc.Status{code=1, message=2}, payload=2}
    response = decode_fields(body)
    status = decode_fields(response.get(1, [b""])[0])
    code = status.get(1, [0])[0]
    message = status.get(2, [b""])[0].decode(errors="replace")
    return code, message, response.get(2, [b""])[0]


# --- subcommands --------------------------------------------------------------------


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def command_wait(args):
    deadline = time.monotonic() + args.timeout
    attempts = 0
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if args.pid is not None and not pid_alive(args.pid):
            print(f"hvsock wait: process {args.pid} exited before port {args.port} accepted "
                  f"(last error: {last_error})", file=sys.stderr)
            return EXIT_UNREACHABLE
        attempts += 1
        try:
            connect(args.socket, args.port, timeout=max(0.1, deadline - time.monotonic())).close()
            return 0
        except (OSError, HandshakeError) as error:
            last_error = str(error)
        # The guest side has no event this client could block on, so poll at a short
        # interval until the deadline.
        time.sleep(args.interval)

    print(f"hvsock wait: port {args.port} on {args.socket} did not accept within {args.timeout}s "
          f"after {attempts} attempts (last error: {last_error})", file=sys.stderr)
    return EXIT_UNREACHABLE


def command_health(args):
    try:
        sock = connect(args.socket, args.port, timeout=args.timeout)
    except (OSError, HandshakeError) as error:
        print(f"hvsock health: {args.socket} port {args.port}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE

    # CheckRequest{service=1}: an empty service requests the status of the whole agent.
    payload = encode_bytes_field(1, args.service.encode()) if args.service else b""
    timeout_nano = int(args.timeout * 1e9)
    try:
        with sock:
            code, message, response = call(sock, "grpc.Health", args.method, payload, timeout_nano)
    except (OSError, ProtocolError) as error:
        print(f"hvsock health: grpc.Health/{args.method}: {error}", file=sys.stderr)
        return EXIT_UNEXPECTED

    if code != 0:
        print(f"hvsock health: grpc.Health/{args.method} failed: status {code}: {message}",
              file=sys.stderr)
        return EXIT_UNEXPECTED

    fields = decode_fields(response)
    if args.method == "Check":
        # HealthCheckResponse{status=1}
        status = fields.get(1, [0])[0]
        name = SERVING_STATUS.get(status, f"unknown value {status}")
        print(f"grpc.Health/Check: {name}")
        return 0 if status == 1 else EXIT_UNEXPECTED

    # VersionCheckResponse{grpc_version=1, agent_version=2}
    grpc_version = fields.get(1, [b""])[0].decode(errors="replace")
    agent_version = fields.get(2, [b""])[0].decode(errors="replace")
    print(f"grpc.Health/Version: agent {agent_version}, grpc {grpc_version}")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    wait = commands.add_parser("wait", help="wait until the guest port accepts a connection")
    wait.add_argument("socket", help="hybrid vsock unix socket on the host")
    wait.add_argument("port", type=int, help="guest vsock port")
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds to keep trying (default 60)")
    wait.add_argument("--interval", type=float, default=0.1, help="seconds between attempts (default 0.1)")
    wait.add_argument("--pid", type=int, help="stop waiting when this process (the VMM) exits")
    wait.set_defaults(run=command_wait)

    health = commands.add_parser("health", help="call grpc.Health/Check or grpc.Health/Version")
    health.add_argument("socket", help="hybrid vsock unix socket on the host")
    health.add_argument("port", type=int, help="guest vsock port")
    health.add_argument("--method", choices=["Check", "Version"], default="Check")
    health.add_argument("--service", default="", help="CheckRequest.service (default empty)")
    health.add_argument("--timeout", type=float, default=10.0, help="seconds for the call (default 10)")
    health.set_defaults(run=command_health)

    args = parser.parse_args(argv)
    if not 0 <= args.port <= 0xFFFFFFFF:
        parser.error(f"port {args.port} is out of range 0..4294967295")
    return args


def main(argv):
    args = parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
