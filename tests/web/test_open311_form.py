"""The Open311 POST's form, read by web.open311 itself (urllib and python-multipart walk a
Chinese description's escapes one by one; this reads each run at once): the same fields as
the standard library's parser for any form-encoded body, a multipart body still read, and
the limits — 100 fields, 64 KB even without a Content-Length — answered 400 in the asked
format with nothing filed."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from sqlmodel import select

from hotline.open311 import clients
from tests.web.test_open311_api import WAGES, _errors_json, _errors_xml
from tickets.models import Ticket
from web.open311 import MAX_BODY, FormError, parse_form

V2 = "/open311/v2"


@pytest.mark.parametrize(
    "body",
    [
        urlencode(WAGES).encode(),
        urlencode({"description": "a+b c&d=e;f %41 ％ 100%", "x": ""}).encode(),
        b"a=%e6%8b%96%E6%AC%A0&b=1+2&c=%2B&d=%26%3D",  # lower- and upper-case hex
        b"a=%zz&b=%&c=%4&d=100%25",  # not escapes: kept as written
        b"a=%FF%FE&b=%E6%8B",  # not UTF-8: U+FFFD, as starlette and urllib give
        b"&&a&=b&c==d&",  # empty parts dropped, a name without a value is blank
        "a=名字&b=直接写的中文".encode(),
    ],
)
def test_given_a_form_body_then_the_fields_of_the_standard_parser(body):
    # the standard parser, each byte as a latin-1 character, then the bytes read as UTF-8
    fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    assert parse_form(body) == [(_utf8(n), _utf8(v)) for n, v in fields]


def _utf8(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "replace")


def test_given_too_many_fields_then_refused():
    assert len(parse_form(b"&".join(b"f%d=1" % i for i in range(100)))) == 100
    with pytest.raises(FormError):
        parse_form(b"&".join(b"f%d=1" % i for i in range(101)))


@pytest.fixture
def key(session, world, clock) -> str:
    _, made = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    session.commit()
    return made


def test_given_a_multipart_form_then_filed_as_a_form_encoded_one(client, session, world, key):
    fields = {**WAGES, "api_key": key}
    response = client.post(
        f"{V2}/requests.json", data=fields, files={"photo": ("a.jpg", b"\xff\xd8", "image/jpeg")}
    )
    # max_files=0: a multipart body carrying a file is refused, as before
    assert _errors_json(response, 400)
    boundary = "open311-boundary"
    body = (
        "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'
            for n, v in fields.items()
        )
        + f"--{boundary}--\r\n"
    )
    response = client.post(
        f"{V2}/requests.json",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    number = response.json()[0]["service_request_id"]
    ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
    assert ticket.description == WAGES["description"] and ticket.caller_name == "张三丰"


def test_given_an_oversized_or_overfull_body_then_400_and_nothing_filed(
    client, session, world, key
):
    def chunks():  # no Content-Length: the body is counted as it comes
        yield urlencode({**WAGES, "api_key": key}).encode()
        yield b"&pad=" + b"x" * MAX_BODY

    (said,) = _errors_xml(
        client.post(
            f"{V2}/requests.xml",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    assert "larger than 64 KB" in said
    fields = {**WAGES, "api_key": key, **{f"extra{i}": "1" for i in range(100)}}
    (said,) = _errors_json(client.post(f"{V2}/requests.json", data=fields), 400)
    assert "Too many fields" in said
    assert session.exec(select(Ticket)).all() == []
    # a form-encoded body the client labelled with its charset is read all the same
    response = client.post(
        f"{V2}/requests.json",
        content=urlencode({**WAGES, "api_key": key}).encode(),
        headers={"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert response.status_code == 201, response.text
