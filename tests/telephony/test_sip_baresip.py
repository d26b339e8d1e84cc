"""baresip, a real softphone, calling the edge directly on loopback. Its INVITE carries an
empty ``Supported:`` header, on which pyVoIP 1.6.8's parser failed, so it could not call."""

from __future__ import annotations

import logging
import subprocess
import wave
from pathlib import Path

from tests.conftest import wait_until
from tests.telephony.sip_peers import dominant_frequency, free_udp_port, rms, start_edge, tone

MODULES = Path("/usr/lib/baresip/modules")


def _baresip_dir(tmp_path: Path) -> Path:
    source = tmp_path / "tone.wav"
    with wave.open(str(source), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(tone(1000, 2.0))
    rtp = free_udp_port()
    (tmp_path / "config").write_text(
        "poll_method poll\n"
        f"sip_listen 127.0.0.1:{free_udp_port()}\n"
        f"audio_source aufile,{source}\n"
        f"module_path {MODULES}\n"
        "module g711.so\nmodule aufile.so\nmodule menu.so\nmodule_app account.so\n"
        f"rtp_ports {rtp}-{rtp + 1}\n"
    )
    (tmp_path / "accounts").write_text("<sip:citizen@127.0.0.1>;regint=0;audio_codecs=PCMA,PCMU\n")
    return tmp_path


def test_given_baresip_when_it_dials_the_edge_then_call_is_answered_and_audio_heard(tmp_path):
    # baresip puts its eth0 address in the SDP but sends from loopback: accept by latching.
    harness = start_edge(rtp_latch=True)
    try:
        host, port = harness.edge.address
        result = subprocess.run(
            [
                "baresip",
                "-f",
                str(_baresip_dir(tmp_path)),
                "-e",
                f"/dial sip:12345@{host}:{port}",
                "-t",
                "4",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
        assert harness.calls, result.stdout[-3000:] + result.stderr[-1000:]
        call = harness.calls[0]
        wait_until(lambda: harness.ended, 5, message="the call's end")
        assert call.codec == "PCMA" and call.remote_number == "citizen"
        heard = b"".join(harness.frames[call.call_id])
        assert len(heard) > 8000 * 2  # over a second of baresip's audio
        loud = heard[len(heard) // 4 : len(heard) // 2]
        assert rms(loud) > 2000 and abs(dominant_frequency(loud) - 1000) < 20
    finally:
        harness.edge.stop()


def test_given_softphone_sending_rtp_from_another_address_than_its_sdp_then_latched_and_logged(
    tmp_path, caplog
):
    # baresip behaves like a phone behind NAT: its SDP names eth0, its RTP comes from loopback.
    harness = start_edge()  # the default configuration
    try:
        host, port = harness.edge.address
        with caplog.at_level(logging.INFO, logger="telephony.rtp_session"):
            subprocess.run(
                [
                    "baresip",
                    "-f",
                    str(_baresip_dir(tmp_path)),
                    "-e",
                    f"/dial sip:12345@{host}:{port}",
                ]
                + ["-t", "4"],
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
            )
            wait_until(lambda: harness.ended, 5, message="the call's end")
        heard = b"".join(harness.frames[harness.calls[0].call_id])
        assert rms(heard[len(heard) // 4 : len(heard) // 2]) > 2000  # not an empty call
        assert any("RTP latched to ('127.0.0.1'" in r.getMessage() for r in caplog.records)
    finally:
        harness.edge.stop()
