"""The seats' registrar (RFC 3261 §10.3, RFC 7616 digest) on its own: REGISTERs built here,
answered by ``Registrar.handle`` over the in-memory store, with the clock moved by the test."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from telephony import sip_message as sm
from telephony.sip_registrar import (
    Answer,
    MemorySeatStore,
    Registrar,
    dial_uri,
    seat_target,
    split_alias,
)
from telephony.sip_registration import digest_authorization, parse_challenge

REALM = "hotline.test"
PHONE = ("127.0.0.1", 5070)


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def seconds(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemorySeatStore:
    seats = MemorySeatStore()
    seats.add_seat("1001", "right-pw", realm=REALM)
    seats.add_seat("1002", "other-pw", realm=REALM)
    return seats


def make_registrar(store, clock, **kwargs) -> Registrar:
    kwargs.setdefault("algorithms", ("SHA-256", "MD5"))
    return Registrar(
        store,
        realm=REALM,
        secret=b"test-secret",
        wall=clock.wall,
        seconds=clock.seconds,
        **kwargs,
    )


def register(
    extension: str = "1001",
    *,
    contact: str = "<sip:1001@127.0.0.1:5070>",
    expires: str | None = "300",
    authorization: str = "",
    call_id: str = "reg-1@phone",
    cseq: int = 1,
) -> sm.LenientSIPMessage:
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtest;rport"),
        ("From", f"<sip:{extension}@hotline.test>;tag=abc"),
        ("To", f"<sip:{extension}@hotline.test>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", contact),
    ]
    if expires is not None:
        headers.append(("Expires", expires))
    if authorization:
        headers.append(("Authorization", authorization))
    return sm.parse(sm.build_request("REGISTER", "sip:hotline.test", headers))


def challenges(answer: Answer) -> dict[str, dict[str, str]]:
    assert answer.status == 401, answer
    found = [parse_challenge(v) for k, v in answer.headers if k == "WWW-Authenticate"]
    return {c["algorithm"]: c for c in found}


def sha256_authorization(*, password: str, challenge: dict[str, str], user: str = "1001") -> str:
    """RFC 7616 SHA-256 digest (the edge's client side knows only MD5)."""

    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    nonce, cnonce, uri = challenge["nonce"], "0a4f113b", "sip:hotline.test"
    ha1 = h(f"{user}:{challenge['realm']}:{password}")
    response = h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{h(f'REGISTER:{uri}')}")
    return (
        f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=SHA-256, qop=auth, nc=00000001, '
        f'cnonce="{cnonce}"'
    )


def md5_authorization(*, password: str, challenge: dict[str, str], user: str = "1001") -> str:
    return digest_authorization(
        method="REGISTER",
        uri="sip:hotline.test",
        username=user,
        password=password,
        challenge=challenge,
        cnonce="f00dcafe",
    )


def authorized(registrar: Registrar, algorithm: str = "MD5", password: str = "right-pw", **kw):
    """REGISTER, take the challenge, REGISTER again with credentials: the final answer."""
    user = kw.get("extension", "1001")
    challenge = challenges(registrar.handle(register(**kw), PHONE))[algorithm]
    make = md5_authorization if algorithm == "MD5" else sha256_authorization
    value = make(password=password, challenge=challenge, user=user)
    return registrar.handle(register(authorization=value, **kw), PHONE)


def test_given_register_without_credentials_then_challenged_with_sha256_first_and_md5(store, clock):
    answer = make_registrar(store, clock).handle(register(), PHONE)

    offered = [parse_challenge(v) for k, v in answer.headers if k == "WWW-Authenticate"]
    assert [c["algorithm"] for c in offered] == ["SHA-256", "MD5"]
    assert all(c["qop"] == "auth" and c["realm"] == REALM for c in offered)
    assert store.bindings("1001", clock.wall()) == []


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_given_right_password_when_registering_then_bound_and_contact_returned_with_expiry(
    store, clock, algorithm
):
    answer = authorized(make_registrar(store, clock), algorithm)

    assert answer.status == 200
    assert answer.headers == (("Contact", "<sip:1001@127.0.0.1:5070>;expires=300"),)
    [binding] = store.bindings("1001", clock.wall())
    assert binding.received == PHONE and binding.expires_at == clock.wall() + timedelta(seconds=300)


def test_given_default_registrar_then_only_md5_is_offered_and_sha256_answers_refused(store, clock):
    registrar = Registrar(store, realm=REALM, secret=b"s", wall=clock.wall, seconds=clock.seconds)
    offered = challenges(registrar.handle(register(), PHONE))
    assert list(offered) == ["MD5"]

    value = sha256_authorization(password="right-pw", challenge={**offered["MD5"]})
    assert registrar.handle(register(authorization=value), PHONE).status == 403


def test_given_wrong_password_unknown_or_disabled_seat_then_all_answered_403_alike(store, clock):
    registrar = make_registrar(store, clock, max_failures=100)
    store.add_seat("1003", "pw-3", realm=REALM)
    store.disable("1003")

    wrong = authorized(registrar, password="guess")
    unknown = authorized(registrar, extension="1999", contact="<sip:1999@127.0.0.1:5070>")
    disabled = authorized(
        registrar, password="pw-3", extension="1003", contact="<sip:1003@127.0.0.1:5070>"
    )

    assert wrong == unknown == disabled == Answer(403, "Forbidden")
    assert store.bindings("1001", clock.wall()) == []
    assert registrar.rejected == 3


def test_given_credentials_of_another_seat_then_refused(store, clock):
    registrar = make_registrar(store, clock)
    challenge = challenges(registrar.handle(register(), PHONE))["MD5"]
    # 1002's own right password, presented to bind 1001's address of record
    value = md5_authorization(password="other-pw", challenge=challenge, user="1002")

    assert registrar.handle(register(authorization=value), PHONE).status == 403


def test_given_repeated_failures_from_a_source_then_locked_out_even_with_right_password(
    store, clock
):
    registrar = make_registrar(store, clock, max_failures=3, lockout_s=300)
    for _ in range(3):
        assert authorized(registrar, password="guess").status == 403

    assert registrar.handle(register(), PHONE) == Answer(403, "Forbidden")  # no challenge
    clock.t += 299
    assert registrar.handle(register(), PHONE).status == 403
    clock.t += 2
    assert authorized(registrar).status == 200


def test_given_nonce_older_than_its_lifetime_then_stale_challenge_and_nothing_bound(store, clock):
    registrar = make_registrar(store, clock, nonce_ttl_s=300)
    challenge = challenges(registrar.handle(register(), PHONE))["MD5"]
    clock.t += 301

    answer = registrar.handle(
        register(authorization=md5_authorization(password="right-pw", challenge=challenge)),
        PHONE,
    )

    assert challenges(answer)["MD5"]["stale"] == "true"
    assert store.bindings("1001", clock.wall()) == []


def test_given_stale_nonce_with_wrong_password_then_403_not_a_stale_retry(store, clock):
    registrar = make_registrar(store, clock, nonce_ttl_s=300)
    challenge = challenges(registrar.handle(register(), PHONE))["MD5"]
    clock.t += 301

    value = md5_authorization(password="guess", challenge=challenge)
    assert registrar.handle(register(authorization=value), PHONE).status == 403


def test_given_forged_nonce_then_challenged_again(store, clock):
    registrar = make_registrar(store, clock)
    forged = {"realm": REALM, "nonce": "6b000000.0123456789abcdef0123456789abcdef", "qop": "auth"}
    value = md5_authorization(password="right-pw", challenge=forged)

    answer = registrar.handle(register(authorization=value), PHONE)

    assert answer.status == 401 and "stale" not in challenges(answer)["MD5"]


def test_given_nonce_from_another_edge_with_the_same_secret_then_accepted(store, clock):
    first, second = make_registrar(store, clock), make_registrar(store, clock)
    challenge = challenges(first.handle(register(), PHONE))["MD5"]
    value = md5_authorization(password="right-pw", challenge=challenge)

    assert second.handle(register(authorization=value), PHONE).status == 200


def test_given_expiry_below_minimum_then_423_with_min_expires(store, clock):
    answer = authorized(make_registrar(store, clock, min_expires=60), expires="30")

    assert answer == Answer(423, "Interval Too Brief", (("Min-Expires", "60"),))
    assert store.bindings("1001", clock.wall()) == []


def test_given_expiry_above_maximum_then_granted_the_maximum(store, clock):
    answer = authorized(make_registrar(store, clock, max_expires=600), expires="7200")

    assert answer.headers == (("Contact", "<sip:1001@127.0.0.1:5070>;expires=600"),)


def test_given_contact_expires_parameter_then_it_wins_over_the_header(store, clock):
    answer = authorized(
        make_registrar(store, clock), contact="<sip:1001@127.0.0.1:5070>;expires=120"
    )

    assert answer.headers == (("Contact", "<sip:1001@127.0.0.1:5070>;expires=120"),)


def test_given_binding_when_its_time_passes_then_gone_from_bindings_and_target(store, clock):
    authorized(make_registrar(store, clock), expires="120")
    assert seat_target(store, "1001", clock.wall()) == "sip:1001@127.0.0.1:5070"

    clock.t += 121

    assert store.bindings("1001", clock.wall()) == []
    assert seat_target(store, "1001", clock.wall()) is None


def test_given_two_phones_then_both_returned_and_the_newest_is_the_target(store, clock):
    registrar = make_registrar(store, clock)
    authorized(registrar, contact="<sip:1001@127.0.0.1:5070>", call_id="a")
    clock.t += 10
    answer = authorized(registrar, contact="<sip:1001@127.0.0.1:5080>", call_id="b")

    assert answer.headers == (
        ("Contact", "<sip:1001@127.0.0.1:5080>;expires=300"),
        ("Contact", "<sip:1001@127.0.0.1:5070>;expires=290"),
    )
    assert seat_target(store, "1001", clock.wall()) == (
        "sip:1001@127.0.0.1:5080;alias=127.0.0.1~5070~1"  # sent from 5070: NAT-like
    )


def test_given_expires_zero_then_that_contact_is_removed_and_others_stay(store, clock):
    registrar = make_registrar(store, clock)
    authorized(registrar, contact="<sip:1001@127.0.0.1:5070>", call_id="a")
    authorized(registrar, contact="<sip:1001@127.0.0.1:5080>", call_id="b")

    answer = authorized(registrar, contact="<sip:1001@127.0.0.1:5070>", expires="0", call_id="a")

    assert answer.status == 200
    assert [b.contact for b in store.bindings("1001", clock.wall())] == ["sip:1001@127.0.0.1:5080"]


def test_given_star_contact_with_expires_zero_then_every_binding_removed(store, clock):
    registrar = make_registrar(store, clock)
    authorized(registrar, contact="<sip:1001@127.0.0.1:5070>", call_id="a")
    authorized(registrar, contact="<sip:1001@127.0.0.1:5080>", call_id="b")

    assert authorized(registrar, contact="*", expires="0").status == 200
    assert store.bindings("1001", clock.wall()) == []


def test_given_star_contact_without_expires_zero_then_400_and_nothing_removed(store, clock):
    registrar = make_registrar(store, clock)
    authorized(registrar)

    assert authorized(registrar, contact="*", expires="300").status == 400
    assert len(store.bindings("1001", clock.wall())) == 1


def test_given_an_older_cseq_of_the_same_call_id_then_the_binding_is_not_changed(store, clock):
    registrar = make_registrar(store, clock)
    authorized(registrar, cseq=10, expires="600")

    late = authorized(registrar, cseq=5, expires="0")

    assert late.status == 500
    assert len(store.bindings("1001", clock.wall())) == 1


def test_given_too_many_contacts_then_refused_and_the_first_ones_kept(store, clock):
    registrar = make_registrar(store, clock, max_bindings=2)
    for port in (5070, 5071):
        assert authorized(registrar, contact=f"<sip:1001@127.0.0.1:{port}>").status == 200

    assert authorized(registrar, contact="<sip:1001@127.0.0.1:5072>").status == 403
    assert len(store.bindings("1001", clock.wall())) == 2


def test_given_a_contact_that_is_no_sip_uri_then_400(store, clock):
    assert authorized(make_registrar(store, clock), contact="<mailto:x@y>").status == 400


def test_alias_in_a_dial_uri_round_trips_to_the_received_address(store, clock):
    authorized(make_registrar(store, clock), contact="<sip:1001@10.1.2.3:5060;transport=udp>")
    [binding] = store.bindings("1001", clock.wall())

    uri = dial_uri(binding)

    assert uri == "sip:1001@10.1.2.3:5060;transport=udp;alias=127.0.0.1~5070~1"
    assert split_alias(uri) == ("sip:1001@10.1.2.3:5060;transport=udp", PHONE)
    assert split_alias("sip:1001@127.0.0.1:5070") == ("sip:1001@127.0.0.1:5070", None)


def test_registrar_refuses_to_start_without_a_secret_or_with_an_unknown_algorithm(store):
    with pytest.raises(ValueError):
        Registrar(store, realm=REALM, secret=b"")
    with pytest.raises(ValueError):
        Registrar(store, realm=REALM, secret=b"s", algorithms=("SHA-512",))


def test_memory_store_refuses_an_extension_that_is_not_digits(store):
    with pytest.raises(ValueError):
        store.add_seat("10a1", "pw", realm=REALM)


def test_given_an_answer_without_qop_then_refused(store, clock):
    """We offer qop=auth; an RFC 2069 answer (no cnonce in the hash) is not accepted."""
    registrar = make_registrar(store, clock)
    challenge = challenges(registrar.handle(register(), PHONE))["MD5"]
    value = md5_authorization(password="right-pw", challenge={**challenge, "qop": ""})

    assert "qop" not in value
    assert registrar.handle(register(authorization=value), PHONE).status == 403


def test_given_register_without_contact_then_the_current_bindings_are_listed(store, clock):
    registrar = make_registrar(store, clock)
    authorized(registrar)
    challenge = challenges(registrar.handle(register(), PHONE))["MD5"]
    value = md5_authorization(password="right-pw", challenge=challenge)
    query = sm.parse(
        sm.build_request(
            "REGISTER",
            "sip:hotline.test",
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKq;rport"),
                ("From", "<sip:1001@hotline.test>;tag=q"),
                ("To", "<sip:1001@hotline.test>"),
                ("Call-ID", "query@phone"),
                ("CSeq", "1 REGISTER"),
                ("Authorization", value),
            ],
        )
    )

    answer = registrar.handle(query, PHONE)

    assert answer.headers == (("Contact", "<sip:1001@127.0.0.1:5070>;expires=300"),)


def test_given_non_ascii_nonce_or_response_then_challenged_or_refused_not_crashed(store, clock):
    registrar = make_registrar(store, clock)
    challenge = challenges(registrar.handle(register(), PHONE))["MD5"]
    odd_nonce = md5_authorization(password="right-pw", challenge={**challenge, "nonce": "6b1.签名"})
    assert registrar.handle(register(authorization=odd_nonce), PHONE).status == 401

    good = md5_authorization(password="right-pw", challenge=challenge)
    odd_response = re.sub(r'response="[0-9a-f]+"', 'response="答案"', good)
    assert registrar.handle(register(authorization=odd_response), PHONE).status == 403
