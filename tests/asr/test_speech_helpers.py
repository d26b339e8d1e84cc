"""The shared speech helpers other test suites build on."""

from tests.speech import alaw, alaw_to_pcm, read_wav, speak, ulaw, ulaw_to_pcm


def test_given_the_same_text_when_spoken_twice_then_same_cached_file_and_samples():
    first = speak("네")
    assert speak("네") == first
    pcm, rate = read_wav(first)
    assert rate == 8000 and len(pcm) > 8000  # over half a second of speech


def test_given_a_rate_when_spoken_then_wav_is_at_that_rate():
    _, rate = read_wav(speak("네", rate=16000))
    assert rate == 16000


def test_given_speech_when_g711_round_tripped_then_same_length_and_close():
    pcm, _ = read_wav(speak("네"))
    for encode, decode in ((ulaw, ulaw_to_pcm), (alaw, alaw_to_pcm)):
        coded = encode(pcm)
        assert len(coded) == len(pcm) // 2  # one byte a sample
        back = decode(coded)
        assert len(back) == len(pcm)
        assert back != pcm  # lossy
        assert decode(encode(back)) == back  # but stable once quantised
