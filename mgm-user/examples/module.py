#!/usr/bin/env python3
"""A routing-protocol module for mgm, out of process: the smallest useful one.

It registers over mgm's module socket, takes the interfaces it is given, and then:
- passes IGMP's local joins and leaves on the interfaces it co-owns with IGMP on as
  memberships of its own, so those hosts get their streams;
- accepts MGM's RPF proposals (the kernel's unicast routes), except for the groups named with
  --slow, whose answer it sends later with an upstream neighbour of its own, as a protocol that
  consults its peers first would (mgm goes on with everything else meanwhile);
- refuses forwarding on the interfaces named with --block when a new entry is created: an
  admission-control policy.

Every line it receives or sends is echoed to stdout with "<" or ">" in front. The protocol is
in mgm-user/docs/module-protocol.md. Python 3 standard library only.

    mgm run --external eth0 --downstream eth1 eth2 &
    python3 module.py --take eth0 --take eth2 --block eth2
"""

import argparse
import json
import socket
import sys
import threading
import time


class Module:
    def __init__(self, path, block, silent, decide_ms=0, slow=()):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.lines = self.sock.makefile("r", encoding="utf-8")
        self.block = set(block)
        self.silent = silent
        self.decide_s = decide_ms / 1000
        # group -> (seconds, upstream neighbour) for RPF answers sent later.
        self.slow = {}
        for spec in slow:
            group, ms, upstream = spec.split(":")
            self.slow[group] = (int(ms) / 1000, upstream)
        # Answers sent later go out from timer threads.
        self.sending = threading.Lock()
        self.next_id = 0
        # Responses that arrived while a nested request (sent from a callback) was waiting.
        self.responses = {}

    def send(self, msg):
        line = json.dumps(msg)
        with self.sending:
            print(">", line, flush=True)
            self.sock.sendall(line.encode() + b"\n")

    def receive(self):
        line = self.lines.readline()
        if not line:
            sys.exit("mgm closed the connection")
        print("<", line.strip(), flush=True)
        return json.loads(line)

    def request(self, op, **args):
        """Sends a request and returns its response. Callbacks that arrive before the
        response are handled meanwhile: mgm may be waiting for an answer to one of them, and
        a handler may send requests of its own (a local join is answered with an add)."""
        self.next_id += 1
        my_id = self.next_id
        self.send({"id": my_id, "op": op, **args})
        while my_id not in self.responses:
            msg = self.receive()
            if "callback" in msg:
                self.on_callback(msg)
            elif "id" in msg:
                self.responses[msg["id"]] = msg
        msg = self.responses.pop(my_id)
        if not msg["ok"]:
            raise RuntimeError(f"{op} failed: {msg['error']}")
        return msg.get("result")

    def answer(self, cb, **out):
        if not self.silent:
            self.send({"op": "answer", "to": cb["cb"], **out})

    def on_callback(self, cb):
        kind = cb["callback"]
        entry = {k: cb[k] for k in ("source", "source_mask", "group", "group_mask") if k in cb}
        if kind == "rpf" and cb["group"] in self.slow:
            delay, upstream = self.slow[cb["group"]]
            threading.Timer(delay, self.answer, (cb,), {"upstream": upstream}).start()
        elif kind == "rpf":
            self.answer(cb)  # MGM's proposal stands
        elif kind == "creation_alert":
            refused = [o["interface"] for o in cb["oifs"] if o["interface"] in self.block]
            self.answer(cb, disable=refused)
        elif kind == "prune_alert" and "answer_within_ms" in cb:
            self.answer(cb)  # keep MGM's lifetime for the negative entry
        elif kind in ("local_join", "local_leave"):
            time.sleep(self.decide_s)  # a protocol that consults its own state first
            op = "add_membership" if kind == "local_join" else "delete_membership"
            self.request(op, **entry, interface=cb["interface"], flags=["join"])

    def run(self, protocol_id, component_id, take):
        hello = self.receive()
        if hello.get("version") != 1:
            sys.exit(f"unsupported mgm module protocol: {hello}")
        self.request("register", protocol_id=protocol_id, component_id=component_id)
        for interface in take:
            self.request("take_interface", interface=interface)
        print("ready", flush=True)
        while True:
            msg = self.receive()
            if "callback" in msg:
                self.on_callback(msg)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", default="/run/mgm/mgm.sock", help="mgm's module socket")
    p.add_argument("--protocol-id", type=lambda s: int(s, 0), default=0x4D470100)
    p.add_argument("--component-id", type=int, default=1)
    p.add_argument("--take", action="append", default=[], metavar="IF",
                   help="an interface to own (repeatable)")
    p.add_argument("--block", action="append", default=[], metavar="IF",
                   help="never forward new entries on IF (repeatable)")
    p.add_argument("--silent", action="store_true",
                   help="never answer callbacks, to see mgm's deadline at work")
    p.add_argument("--decide-ms", type=int, default=0, metavar="MS",
                   help="take this long to act on a local join or leave, as a protocol that "
                        "consults its own state would")
    p.add_argument("--slow", action="append", default=[], metavar="GROUP:MS:UPSTREAM",
                   help="answer the RPF callback of GROUP's flows after MS milliseconds, with "
                        "UPSTREAM as the upstream neighbour (repeatable)")
    args = p.parse_args()
    try:
        Module(args.socket, args.block, args.silent, args.decide_ms, args.slow).run(
            args.protocol_id, args.component_id, args.take)
    except (OSError, RuntimeError) as e:
        sys.exit(f"module: {e}")


if __name__ == "__main__":
    main()
