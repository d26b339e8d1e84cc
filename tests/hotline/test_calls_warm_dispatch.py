"""jieba, which the rules segment a transcript with, is ready when the call services are:
the first report's end used to import it and load its dictionary, holding the GIL for
about a second while every call of the SIP process waited."""

from __future__ import annotations

from dispatch import segment
from hotline.calls import services as call_services


def test_given_call_services_then_jieba_is_loaded_before_the_first_call(
    db, make_services, monkeypatch
):
    loaded: list[str] = []

    class Tokenizer:
        def initialize(self) -> None:
            loaded.append("dictionary")

    class Jieba:
        dt = Tokenizer()

    monkeypatch.setattr(segment, "jieba_module", lambda: Jieba)

    make_services(None)

    assert loaded == ["dictionary"]


def test_given_the_warm_up_then_the_real_dictionary_is_loaded():
    call_services.warm_dispatch()

    assert segment.jieba_module().dt.initialized
