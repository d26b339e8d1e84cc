"""`hotline sip` is the seats' registrar: a seat made with `hotline seats add` registers with
its printed password against the running process, and the binding lands in the database with
the edge that took it (issue 17: operators' phones register to the platform's edge)."""

from __future__ import annotations

import re
import subprocess

from sqlalchemy import select

from core.db import make_engine, make_session_factory
from telephony.models import SeatRegistration, SipEdgeRecord
from tests.cli.sip_processes import HOTLINE, edge_env, start_edge
from tests.conftest import wait_until
from tests.telephony.sip_peers import HOST, free_udp_port, output, run_sipp


def test_given_a_seat_made_by_the_cli_when_its_phone_registers_with_hotline_sip_then_bound(
    tmp_path,
):
    edge = edge_env(tmp_path, rtp_ports=2)
    env, port = edge.env, edge.port
    made = subprocess.run(
        [str(HOTLINE), "seats", "add", "1001", "--name", "desk 1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    password = re.search(r"password: (\S+)", made.stdout)
    assert password, made.stdout
    factory = make_session_factory(make_engine(edge.db_url))
    proc, lines = start_edge(env)
    try:
        phone = free_udp_port()
        wrong = run_sipp(
            "uac_register_refused.xml",
            target=f"{HOST}:{port}",
            service="1001",
            port=phone,
            keys={"contact": f"<sip:1001@{HOST}:{phone}>", "expires": 120},
            extra=["-au", "1001", "-ap", "not-the-password"],
            timeout=5,
        )
        assert wrong.returncode == 0, output(wrong) + "".join(lines)
        result = run_sipp(
            "uac_register.xml",
            target=f"{HOST}:{port}",
            service="1001",
            port=phone,
            keys={"contact": f"<sip:1001@{HOST}:{phone}>", "expires": 120},
            extra=["-au", "1001", "-ap", password.group(1)],
            timeout=5,
        )
        assert result.returncode == 0, output(result) + "".join(lines)

        def bindings() -> list[SeatRegistration]:
            with factory() as s:
                return list(s.scalars(select(SeatRegistration)))

        wait_until(bindings, 10, message="the binding stored")
        (binding,) = bindings()
        with factory() as s:
            edges = {row.id for row in s.scalars(select(SipEdgeRecord))}
        assert binding.extension == "1001"
        assert binding.contact == f"sip:1001@{HOST}:{phone}"
        assert (binding.received_host, binding.received_port) == (HOST, phone)
        assert binding.edge_id in edges
    finally:
        proc.terminate()
        proc.wait(20)
