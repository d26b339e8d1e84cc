from __future__ import annotations

import warnings

import numpy as np
import pytest

from telephony import codecs


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the stdlib's until 3.13, audioop-lts's after (pyproject)

        return audioop


ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_BYTES = bytes(range(256))


def test_given_every_16_bit_sample_when_encoded_then_bytes_match_the_g711_reference():
    audioop = _audioop()
    assert codecs.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert codecs.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)


def test_given_every_g711_byte_when_decoded_then_16_bit_values_match_the_reference():
    audioop = _audioop()
    assert codecs.ulaw_decode(ALL_BYTES) == audioop.ulaw2lin(ALL_BYTES, 2)
    assert codecs.alaw_decode(ALL_BYTES) == audioop.alaw2lin(ALL_BYTES, 2)


def test_silence_encodes_to_the_idle_codes_phones_expect():
    assert codecs.silence_byte(codecs.PCMU) == 0xFF
    assert codecs.silence_byte(codecs.PCMA) == 0xD5


def test_given_opus_payload_type_when_asking_for_a_codec_then_refused_clearly():
    with pytest.raises(codecs.UnsupportedCodec, match="111"):
        codecs.encoder(111)
