"""A small authoritative DNS server on trio for tests: real UDP on 127.0.0.1, records
changed while it runs, every question it was asked recorded.

    zone = Zone()
    zone.srv("_rancher-server._tcp.test.", [("n1.test.", 8443)], ttl=30)
    zone.a("n1.test.", ["10.0.0.1"])
    port = await nursery.start(serve_dns, zone)

Names it does not hold get NXDOMAIN; a held name without the asked type gets an empty
answer (NOERROR). ``zone.silent = True`` makes it drop every question (a server down).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

__all__ = ["Zone", "serve_dns"]


@dataclass
class Zone:
    records: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    """(name, type) -> (ttl, rdata texts)."""
    asked: list[tuple[str, str]] = field(default_factory=list)
    silent: bool = False
    changed: trio.Event = field(default_factory=trio.Event)
    """Set at every question (then replaced): ``await zone.wait_asked()``."""

    def srv(self, name: str, targets: list[tuple[str, int]], ttl: int = 0) -> None:
        self.records[name, "SRV"] = (ttl, [f"0 0 {port} {target}" for target, port in targets])

    def a(self, name: str, addresses: list[str], ttl: int = 0) -> None:
        self.records[name, "A"] = (ttl, addresses)

    def aaaa(self, name: str, addresses: list[str], ttl: int = 0) -> None:
        self.records[name, "AAAA"] = (ttl, addresses)

    def remove(self, name: str, rdtype: str) -> None:
        del self.records[name, rdtype]

    def count(self, name: str, rdtype: str) -> int:
        return self.asked.count((name, rdtype))

    async def wait_asked(self, name: str, rdtype: str, times: int) -> None:
        """Until ``name``/``rdtype`` was asked at least ``times`` times in all."""
        while self.count(name, rdtype) < times:
            await self.changed.wait()

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, rdtype))
        held = self.records.get((name, rdtype))
        if held is not None:
            ttl, texts = held
            response.answer.append(
                dns.rrset.from_text_list(name, ttl, dns.rdataclass.IN, rdtype, texts)
            )
        elif not any(key[0] == name for key in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response


async def serve_dns(
    zone: Zone, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer questions for ``zone`` on 127.0.0.1; ``task_status.started(port)``."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, source = await sock.recvfrom(4096)
            try:
                query = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue
            if zone.silent:
                zone.asked.append(("(dropped)", ""))
            else:
                await sock.sendto(zone.answer(query).to_wire(), source)
            event, zone.changed = zone.changed, trio.Event()
            event.set()
