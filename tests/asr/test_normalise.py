import unicodedata

import pytest

from asr.normalise import normalise_text, normalise_token

DECOMPOSED_MUL = unicodedata.normalize("NFD", "물이")


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("물이", "물이"),
        (DECOMPOSED_MUL, "물이"),  # jamo sequences become the syllables people type
        ("LA", "LA"),
        ("%", "%"),
        ("㎞", "㎞"),  # NFC, not NFKC: the transcript keeps what the model said
        ("<UNK>", ""),
        ("<unk>", ""),
        ("[unk]", ""),
        ("<SPOKEN_NOISE>", ""),
        ("!SIL", ""),
        ("<eps>", ""),
        ("<s>", ""),
        ("</s>", ""),
        ("[공]", "공"),  # a digit read one by one
        ("[12]", "12"),
        ("[쩜]", "쩜"),
        ("(백)", "백"),  # a place value
        ("{만}", "만"),  # a large unit
        ("  니다 ", "니다"),
        ("", ""),
    ],
)
def test_given_a_model_token_when_normalised_then_reads_as_spoken(token, expected):
    assert normalise_token(token) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("모이모 이 먹 니다", "모이모 이 먹 니다"),
        ("  전화  <UNK> 번호 \n", "전화 번호"),
        ("[공] [일] [공] (백) {만}", "공 일 공 백 만"),
        ("<SPOKEN_NOISE> [unk]", ""),
        (f"{DECOMPOSED_MUL}\t새고", "물이 새고"),
        ("", ""),
    ],
)
def test_given_an_engine_text_when_normalised_then_non_words_go_and_spaces_collapse(text, expected):
    assert normalise_text(text) == expected
