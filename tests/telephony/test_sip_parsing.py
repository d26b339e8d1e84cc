"""The lenient parser, SDP negotiation and digest, without a network."""

from __future__ import annotations

import pytest

from telephony import sip_message as sm
from telephony.sip_config import SipConfig
from telephony.sip_edge import SipEdge
from telephony.sip_registration import digest_authorization, parse_challenge
from telephony.sip_sdp import read_offer

SDP = "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\n{c}t=0 0\r\nm=audio 6000 RTP/AVP {fmts}\r\n{attrs}"


def _invite(*, headers: str | None = None, sdp: str | None = None, version: str = "SIP/2.0"):
    sdp = (
        SDP.format(
            c="c=IN IP4 10.1.2.3\r\n", fmts="0 8 101", attrs="a=rtpmap:101 telephone-event/8000\r\n"
        )
        if sdp is None
        else sdp
    )
    headers = (
        headers
        if headers is not None
        else (
            "Via: SIP/2.0/UDP 10.1.2.3:5062;branch=z9hG4bKa1\r\n"
            'From: "Citizen" <sip:13800000000@10.1.2.3>;tag=f1\r\n'
            "To: <sip:12345@10.9.9.9>\r\nCall-ID: c1@10.1.2.3\r\nCSeq: 7 INVITE\r\n"
            "Content-Type: application/sdp\r\n"
        )
    )
    return (
        f"INVITE sip:12345@10.9.9.9 {version}\r\n{headers}Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


BARESIP_STYLE = _invite(
    headers=(
        "v: SIP/2.0/UDP 10.1.2.3:5062;branch=z9hG4bKa1;rport\r\n"
        "f: <sip:citizen@10.1.2.3>;tag=f1\r\nt: <sip:12345@10.9.9.9>\r\ni: c1@10.1.2.3\r\n"
        "cseq: 7 INVITE\r\nSupported:\r\nm: <sip:citizen@10.1.2.3:5062>\r\n"
        "c: application/sdp\r\n"
    )
)


def test_given_compact_lower_case_and_empty_supported_headers_then_parsed():
    with pytest.raises(Exception):
        sm.SIPMessage(BARESIP_STYLE)  # pyVoIP 1.6.8 alone
    message = sm.parse(BARESIP_STYLE)
    assert message.method == "INVITE" and message.call_id == "c1@10.1.2.3"
    assert message.cseq == (7, "INVITE") and message.tag("From") == "f1"
    assert message.headers["From"]["number"] == "citizen"  # pyVoIP's own structures
    assert sm.uri_of(message.raw_message.get("Contact")) == "sip:citizen@10.1.2.3:5062"


def test_given_other_sip_version_then_parsed_for_a_505():
    message = sm.parse(_invite(version="SIP/3.0"))
    assert message.received_version == "SIP/3.0" and message.call_id == "c1@10.1.2.3"


@pytest.mark.parametrize(
    "data, status",
    [
        (_invite(headers="Via: SIP/2.0/UDP 10.1.2.3;branch=z9hG4bKx\r\nnot a header\r\n"), 400),
        (_invite(headers="Via: SIP/2.0/UDP 10.1.2.3;branch=z9hG4bKx\r\nCall-ID: x\r\n"), 400),
        (b"\xff\xfe\x00garbage", None),
        (b"hello", None),
    ],
)
def test_given_unparseable_datagram_then_error_says_whether_a_response_can_be_routed(data, status):
    with pytest.raises(sm.SipParseError) as error:
        sm.parse(data)
    assert error.value.status == status


@pytest.mark.parametrize("fmts, expected", [("0 8 101", 0), ("8 0", 8), ("18 8 0", 8)])
def test_given_offer_then_callers_first_g711_codec_and_telephone_event_kept(fmts, expected):
    sdp = SDP.format(
        c="c=IN IP4 10.1.2.3\r\n",
        fmts=fmts,
        attrs="a=rtpmap:101 telephone-event/8000\r\na=rtpmap:18 G729/8000\r\n",
    )
    offer, problem = read_offer(sm.parse(_invite(sdp=sdp)))
    assert problem == "" and offer.payload_type == expected
    assert offer.address == "10.1.2.3" and offer.port == 6000
    assert offer.dtmf_payload_type == (101 if "101" in fmts else None)


@pytest.mark.parametrize(
    "sdp, why",
    [
        (
            SDP.format(
                c="c=IN IP4 10.1.2.3\r\n", fmts="111", attrs="a=rtpmap:111 opus/48000/2\r\n"
            ),
            "PCMU or PCMA",
        ),
        (SDP.format(c="", fmts="0 8", attrs=""), "c="),
        ("", "no SDP"),
    ],
)
def test_given_unusable_offer_then_refused_with_reason(sdp, why):
    offer, problem = read_offer(sm.parse(_invite(sdp=sdp)))
    assert offer is None and why in problem


def test_given_rport_then_response_goes_to_source_else_to_sent_by_port():
    assert sm.via_target(
        "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport", ("192.0.2.7", 40000)
    ) == ("192.0.2.7", 40000)
    assert sm.via_target("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa", ("192.0.2.7", 40000)) == (
        "192.0.2.7",
        5070,
    )
    stamped = sm.stamp_via("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport", ("192.0.2.7", 40000))
    assert stamped.endswith(";rport=40000;received=192.0.2.7")


def test_given_rfc2617_example_then_qop_auth_digest_matches():
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge["qop"] == "auth,auth-int"
    value = digest_authorization(
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        challenge=challenge,
        cnonce="0a4f113b",
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth, nc=00000001" in value and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_given_challenge_without_qop_then_rfc2069_digest():
    value = digest_authorization(
        method="REGISTER",
        uri="sip:pbx",
        username="u",
        password="p",
        challenge={"realm": "r", "nonce": "n"},
        cnonce="c",
    )
    assert "qop" not in value and "cnonce" not in value


def test_given_wildcard_bind_then_a_reachable_address_is_advertised():
    assert SipEdge(SipConfig(host="0.0.0.0")).advertised_host not in ("0.0.0.0", "")
    assert SipEdge(SipConfig(host="127.0.0.1")).advertised_host == "127.0.0.1"
    assert SipEdge(SipConfig(advertised_host="203.0.113.5")).advertised_host == "203.0.113.5"
