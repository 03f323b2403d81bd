#!/usr/bin/env python3
"""Send QMP commands to a QEMU started by vm/run-vm.sh and print each result as JSON.

Usage: vm/qmp.py QMP_SOCKET COMMAND [ARGUMENTS_JSON] [COMMAND [ARGUMENTS_JSON]]...

Examples, hot-plugging a raw disk at PCI slot 0x7:
  vm/qmp.py RUNDIR/qmp.sock \\
      blockdev-add '{"driver":"raw","node-name":"d7","file":{"driver":"file","filename":"/path/disk.img"}}' \\
      device_add '{"driver":"virtio-blk-pci","drive":"d7","id":"disk7","addr":"0x7"}'
  vm/qmp.py RUNDIR/qmp.sock device_del '{"id":"disk7"}'

Commands run in order on one connection. The script stops at the first command for
which QEMU returns an error, and exits 1. Asynchronous events are skipped.
"""

import json
import socket
import sys


class QmpError(Exception):
    """QEMU returned an error for a command, or the connection broke."""


class QmpConnection:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")

        greeting = self.read_message()
        if "QMP" not in greeting:
            raise QmpError(f"expected the QMP greeting, got {greeting}")
        # QEMU accepts other commands only after capabilities negotiation.
        self.execute("qmp_capabilities", {})

    def read_message(self):
        line = self.reader.readline()
        if not line:
            raise QmpError("QEMU closed the QMP connection")
        return json.loads(line)

    def execute(self, command, arguments):
        request = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")

        while True:
            message = self.read_message()
            if "event" in message:
                continue
            if "error" in message:
                error = message["error"]
                raise QmpError(f"{command}: {error.get('class')}: {error.get('desc')}")
            return message.get("return")

    def close(self):
        self.reader.close()
        self.sock.close()


def parse_commands(words):
    """Pair each command name with the JSON object that follows it, if any."""
    commands = []
    index = 0
    while index < len(words):
        command = words[index]
        arguments = {}
        if index + 1 < len(words) and words[index + 1].lstrip().startswith("{"):
            try:
                arguments = json.loads(words[index + 1])
            except json.JSONDecodeError as error:
                raise SystemExit(f"qmp.py: arguments of {command} are not valid JSON: {error}")
            index += 1
        commands.append((command, arguments))
        index += 1
    return commands


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, commands = argv[0], parse_commands(argv[1:])

    try:
        connection = QmpConnection(path, timeout=30)
    except (OSError, QmpError) as error:
        print(f"qmp.py: connect to {path}: {error}", file=sys.stderr)
        return 1

    try:
        for command, arguments in commands:
            print(json.dumps(connection.execute(command, arguments)))
    except (OSError, QmpError) as error:
        print(f"qmp.py: {error}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
