"""Decoder processes: live streams decoding in children of their own (asr.processes)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from asr import decoder_child
from asr import processes as procs
from asr.config import AsrConfig, thp_mode
from asr.live import LiveTranscriber, LiveTranscriptUnavailable
from asr.offline import frames, transcribe_pcm
from asr.processes import DecoderProcesses
from asr.recognizer import AsrError
from tests.conftest import wait_until
from tests.speech import read_wav, speak

REPORT = "가로등이 고장 났어요. 빨리 고쳐 주세요."


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone, only not yet reaped
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def live_transcript(recognizer, pcm: bytes, partials: list[str] | None = None):
    stream = recognizer.try_open_stream()
    assert stream is not None
    live = LiveTranscriber(stream, on_partial=None if partials is None else partials.append)
    for frame in frames(pcm, sample_rate=8000):
        live.feed(frame)
    return stream, live


def test_given_a_call_decoded_in_a_child_then_partials_come_and_the_final_equals_offline(
    decoder_processes, recognizer
):
    pcm, _ = read_wav(speak(REPORT))
    partials: list[str] = []
    stream, live = live_transcript(decoder_processes, pcm, partials)
    transcript = live.finish(timeout=30)

    assert transcript == transcribe_pcm(recognizer=recognizer, pcm16=pcm, sample_rate=8000)
    assert transcript.text and partials  # the final may revise the last partial
    pid = decoder_processes.pids()[stream.process_index]
    assert pid is not None and pid != os.getpid() and alive(pid)
    assert decoder_processes.stats().live == 0  # the stream went back


def test_given_two_children_then_streams_spread_and_live_admission_counts_over_both(
    decoder_processes,
):
    assert decoder_processes.config.max_live_streams == 2
    first = decoder_processes.try_open_stream()
    second = decoder_processes.try_open_stream()
    try:
        assert {first.process_index, second.process_index} == {0, 1}
        assert decoder_processes.try_open_stream() is None  # full: offline for this call
        assert decoder_processes.stats().live == 2
        offline = decoder_processes.open_stream()  # offline work is never refused
        offline.close()
    finally:
        first.close()
        second.close()
    third = decoder_processes.try_open_stream()
    assert third is not None
    third.close()


def test_given_a_bad_grammar_then_the_stream_fails_with_a_clear_error_and_the_child_lives(
    decoder_processes,
):
    stream = decoder_processes.open_stream(grammar=["없는단어입니다xyz"])
    with pytest.raises(AsrError, match="not in the speech model's vocabulary"):
        stream.accept(b"\0" * 320)  # batches are not waited for: the refusal may come ...
        stream.finish()  # ... only here, which waits for every answer
    stream.close()
    assert decoder_processes.stats().ready == 2


@pytest.mark.parametrize("share_model", [True, False], ids=["forked", "own-model"])
def test_given_a_child_killed_mid_call_then_that_call_goes_offline_and_the_child_comes_back(
    vosk_config, monkeypatch, share_model
):
    monkeypatch.setattr(procs, "RESTART_DELAY_S", (0.05, 0.05))
    pcm, _ = read_wav(speak(REPORT))
    decoders = DecoderProcesses(vosk_config, processes=1, share_model=share_model)
    decoders.load()
    zygote = decoders.zygote_pid
    try:
        stream, live = live_transcript(decoders, pcm[: len(pcm) // 2])
        pid = decoders.pids()[0]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(LiveTranscriptUnavailable, match="decoder process 0"):
            live.finish(timeout=30)
        wait_until(
            lambda: decoders.stats().ready == 1 and decoders.pids()[0] != pid,
            timeout=60,
            message="the child started again",
        )
        assert decoders.stats().restarts == 1 and decoders.stats().live == 0
        if share_model:  # forked again by the same zygote: the model was not loaded again
            assert parent_of(decoders.pids()[0]) == zygote == decoders.zygote_pid
            assert decoders.stats().zygote_restarts == 0
        _, again = live_transcript(decoders, pcm)
        assert again.finish(timeout=30).text  # the new child decodes
    finally:
        decoders.close()
    assert not alive(decoders.pids()[0])
    assert zygote is None or not alive(zygote)


@pytest.mark.parametrize("share_model", [True, False], ids=["forked", "own-model"])
def test_given_a_bad_model_path_when_loading_then_one_clear_error_and_no_child_left(
    tmp_path, share_model
):
    decoders = DecoderProcesses(
        AsrConfig(model_path=tmp_path / "none"), processes=2, share_model=share_model
    )
    with pytest.raises(AsrError, match="does not exist"):
        decoders.load()
    assert decoders.stats().ready == 0
    started = [pid for pid in [*decoders.pids(), decoders.zygote_pid] if pid is not None]
    assert started  # the one that found the model missing
    for pid in started:
        wait_until(lambda: not alive(pid), timeout=10, message="the child gone")
    assert decoders.try_open_stream() is None


def test_given_one_child_of_two_threads_when_warming_then_it_warms_the_count_exactly(
    vosk_config,
):
    pcm, _ = read_wav(speak(REPORT))
    config = AsrConfig(model_path=vosk_config.model_path, pool_size=8, max_live_streams=4)
    decoders = DecoderProcesses(config, processes=1, threads=2)
    decoders.load()
    try:
        assert decoders.warm(pcm, count=3) == 3  # on both threads, three in all
        assert decoders.warm(pcm, count=3) == 0
        streams = [decoders.try_open_stream() for _ in range(3)]
        assert all(stream is not None for stream in streams)
        for stream in streams:
            stream.accept(pcm)
        assert {stream.finish().text for stream in streams} != {""}
        for stream in streams:
            stream.close()
    finally:
        decoders.close()


def test_given_warm_up_then_shared_among_children_and_bad_audio_is_a_clear_error(vosk_config):
    pcm, _ = read_wav(speak(REPORT))
    config = AsrConfig(model_path=vosk_config.model_path, pool_size=8, max_live_streams=2)
    decoders = DecoderProcesses(config, processes=2)
    decoders.load()
    try:
        assert decoders.warm(pcm, count=4) == 4  # two in each child
        assert decoders.warm(pcm, count=4) == 0  # the children's pools hold them
        with pytest.raises(AsrError, match="too short"):
            decoders.warm(b"\0" * 320, count=2)
        stop = threading.Event()
        stop.set()
        began = time.monotonic()
        # Unstopped: six more recognizers in each child, each on 100 s of speech.
        assert decoders.warm(pcm * 30, count=16, stop=stop) <= 2
        assert time.monotonic() - began < 15
    finally:
        decoders.close()


def test_given_the_parent_killed_then_its_children_exit(vosk_config, tmp_path):
    script = (
        "import sys\n"
        "from asr.config import AsrConfig\n"
        "from asr.processes import DecoderProcesses\n"
        f"d = DecoderProcesses(AsrConfig(model_path={str(vosk_config.model_path)!r}),"
        " processes=1)\n"
        "d.load()\n"
        "print(d.pids()[0], d.zygote_pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=procs._ROOT,
    )
    try:
        child, zygote = map(int, parent.stdout.readline().split())
        assert alive(child) and alive(zygote)
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not alive(child), timeout=10, message="the orphaned child exits")
        wait_until(lambda: not alive(zygote), timeout=10, message="the orphaned zygote exits")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_given_one_child_with_threads_when_streams_decode_at_once_then_each_equals_offline(
    vosk_config, recognizer
):
    """Three calls in one child of two decoder threads: a stream's batches still run in
    order, one at a time, whichever thread takes them."""
    texts = [
        "가로등이 고장 났어요. 빨리 고쳐 주세요.",
        "도로에 물이 새고 있어요.",
        "쓰레기를 치워 주세요. 냄새가 나요.",
    ]
    audio = [read_wav(speak(text))[0] for text in texts]
    config = dataclasses.replace(vosk_config, max_live_streams=3)
    decoders = DecoderProcesses(config, processes=1, threads=2)
    decoders.load()
    try:
        lives = [live_transcript(decoders, pcm)[1] for pcm in audio]
        results = [live.finish(timeout=60) for live in lives]
    finally:
        decoders.close()
    for pcm, transcript in zip(audio, results, strict=False):
        assert transcript == transcribe_pcm(recognizer=recognizer, pcm16=pcm, sample_rate=8000)
    assert len({t.text for t in results}) == 3


def test_given_no_decoder_thread_then_refused():
    with pytest.raises(AsrError, match="at least one decoder thread"):
        DecoderProcesses(AsrConfig(), threads=0)


# ------------------------------------------------------------ one model, forked children


def memory_kb(pid: int) -> dict[str, int]:
    """The process's Rss, Pss (its share of every page it maps) and AnonHugePages, in kB."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        fields = dict(line.split(":", 1) for line in rollup if ":" in line and "-" not in line)
    return {key: int(fields[key].split()[0]) for key in ("Rss", "Pss", "AnonHugePages")}


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_given_a_shared_model_then_one_single_threaded_zygote_forks_children_that_decode(
    decoder_processes, recognizer
):
    zygote = decoder_processes.zygote_pid
    assert zygote is not None and parent_of(zygote) == os.getpid()
    # The model is loaded and libvosk left no thread behind: the zygote may fork.
    assert threads_of(zygote) == 1
    pids = decoder_processes.pids()
    assert len(set(pids)) == 2 and all(parent_of(pid) == zygote for pid in pids)
    assert all(threads_of(pid) == 1 + decoder_processes.threads for pid in pids)
    texts = ["가로등이 고장 났어요. 빨리 고쳐 주세요.", "도로에 물이 새고 있어요."]
    audio = [read_wav(speak(text))[0] for text in texts]
    calls = [live_transcript(decoder_processes, pcm) for pcm in audio]
    assert {stream.process_index for stream, _ in calls} == {0, 1}  # one in each child
    for pcm, (stream, live) in zip(audio, calls, strict=True):
        assert live.finish(timeout=60) == transcribe_pcm(
            recognizer=recognizer, pcm16=pcm, sample_rate=8000
        )
        stream.close()
    assert threads_of(zygote) == 1


def test_given_forked_children_then_they_share_the_models_pages(vosk_config):
    own = DecoderProcesses(vosk_config, processes=1, share_model=False)
    own.load()
    try:
        alone = memory_kb(own.pids()[0])["Rss"]  # one process with the model to itself
    finally:
        own.close()
    shared = DecoderProcesses(vosk_config, processes=2)
    shared.load()
    try:
        pids = [*shared.pids(), shared.zygote_pid]
        total = sum(memory_kb(pid)["Pss"] for pid in pids)
        rss = [memory_kb(pid)["Rss"] for pid in pids]
    finally:
        shared.close()
    # Each maps the whole model, yet the three together count for about one of it: loaded
    # in each, two children alone would count twice.
    assert all(r > alone * 0.8 for r in rss), (rss, alone)
    assert total < alone * 1.5, (total, alone)


def test_given_the_zygote_killed_then_the_children_go_on_and_a_new_one_forks_the_next(
    vosk_config, recognizer, monkeypatch
):
    monkeypatch.setattr(procs, "RESTART_DELAY_S", (0.05, 0.05))
    pcm, _ = read_wav(speak(REPORT))
    decoders = DecoderProcesses(vosk_config, processes=2)
    decoders.load()
    first = decoders.zygote_pid
    assert first is not None
    seen = {first, *decoders.pids()}
    try:
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: decoders.stats().zygote_restarts == 1 and decoders.zygote_pid != first,
            timeout=60,
            message="the zygote started again",
        )
        second = decoders.zygote_pid
        seen.add(second)
        assert decoders.stats().ready == 2 and decoders.stats().restarts == 0
        stream, live = live_transcript(decoders, pcm)  # the old children still decode
        assert live.finish(timeout=30) == transcribe_pcm(
            recognizer=recognizer, pcm16=pcm, sample_rate=8000
        )
        stream.close()
        orphan = decoders.pids()[1]
        os.kill(orphan, signal.SIGKILL)
        wait_until(
            lambda: decoders.stats().ready == 2 and decoders.pids()[1] != orphan,
            timeout=60,
            message="the child forked by the new zygote",
        )
        assert parent_of(decoders.pids()[1]) == second
        seen.update(decoders.pids())
        _, again = live_transcript(decoders, pcm)
        assert again.finish(timeout=30).text
    finally:
        decoders.close()
    for pid in seen:
        assert not alive(pid), pid  # close() left nothing behind, the old children included


def test_given_a_thread_running_then_the_zygote_refuses_to_fork():
    script = (
        "import socket, threading\n"
        "from asr import zygote\n"
        "from asr.recognizer import AsrError\n"
        "done = threading.Event()\n"
        "threading.Thread(target=done.wait, daemon=True).start()\n"
        "ours, theirs = socket.socketpair()\n"
        "try:\n"
        "    zygote._fork(theirs.fileno(), 1, close=())\n"
        "    print('forked')\n"
        "except AsrError as exc:\n"
        "    print(exc)\n"
        "done.set()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=procs._ROOT,
        check=True,
    ).stdout
    assert "runs 2 threads; it forks only while it runs one" in out
    assert "forked" not in out


# ------------------------------------------------------- the order a child serves requests


def served(queue: decoder_child._StreamQueue) -> list[tuple[int, str]]:
    """Take and finish every request waiting, as one decoder thread does."""
    order = []
    while queue._ending or queue._turns:
        sid, (_rid, op, _arg) = queue.take()
        order.append((sid, op))
        queue.done(sid)
    return order


def test_given_streams_with_work_then_they_take_turns_a_request_each_in_order():
    queue = decoder_child._StreamQueue()
    for sid, op in [(1, "accept"), (1, "accept"), (2, "accept"), (3, "accept"), (2, "accept")]:
        queue.put(sid, (0, op, None))
    assert served(queue) == [
        (1, "accept"),
        (2, "accept"),
        (3, "accept"),
        (1, "accept"),
        (2, "accept"),
    ]


def test_given_streams_ending_then_they_go_first_in_the_order_they_ended_each_until_done():
    queue = decoder_child._StreamQueue()
    for sid in (1, 2, 3):
        queue.put(sid, (0, "accept", None))
    queue.put(3, (0, "finish", None), ending=True)
    queue.put(2, (0, "finish", None), ending=True)
    queue.put(2, (0, "close", None), ending=True)
    assert served(queue) == [
        (3, "accept"),
        (3, "finish"),
        (2, "accept"),
        (2, "finish"),
        (2, "close"),
        (1, "accept"),
    ]


def test_given_a_stream_being_run_when_it_ends_then_its_finish_comes_next():
    queue = decoder_child._StreamQueue()
    queue.put(1, (0, "accept", None))
    assert queue.take()[0] == 1  # a decoder thread runs it now
    queue.put(2, (0, "accept", None))
    queue.put(1, (0, "finish", None), ending=True)
    queue.done(1)
    assert served(queue) == [(1, "finish"), (2, "accept")]
    # an ended stream's id is forgotten once its requests are done: its next ones take turns
    queue.put(2, (0, "accept", None))
    queue.put(1, (0, "accept", None))
    assert served(queue) == [(2, "accept"), (1, "accept")]


def test_given_no_request_then_a_decoder_thread_waits_for_the_next():
    queue = decoder_child._StreamQueue()
    got = []
    thread = threading.Thread(target=lambda: got.append(queue.take()), daemon=True)
    thread.start()
    time.sleep(0.05)
    assert got == []
    queue.put(7, (5, "open", None))
    thread.join(5)
    assert got == [(7, (5, "open", None))]


@pytest.mark.parametrize("share_model", [True, False], ids=["forked", "own-model"])
@pytest.mark.parametrize("huge_pages", [True, False], ids=["huge-pages", "4k-pages"])
def test_given_huge_pages_then_the_decoders_model_and_graph_sit_on_2mb_pages(
    vosk_config, monkeypatch, share_model, huge_pages
):
    """The decoder processes start with glibc's huge-page tunable (asr.config.decoder_env;
    an operator's own GLIBC_TUNABLES kept), so the model and the recognizers' graph sit on
    transparent huge pages where the kernel's mode gives them on advice ("madvise", Debian's
    default); without it, on 4 kB pages. Under "always" or "never" the kernel decides alone."""
    mode = thp_mode()
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")
    pcm, _ = read_wav(speak(REPORT))
    config = dataclasses.replace(vosk_config, huge_pages=huge_pages)
    decoders = DecoderProcesses(config, processes=1, share_model=share_model)
    decoders.load()
    try:
        _, live = live_transcript(decoders, pcm)
        assert live.finish(timeout=30).text
        pid = decoders.pids()[0]
        assert pid is not None
        huge_kb = memory_kb(pid)["AnonHugePages"]
    finally:
        decoders.close()
    if mode == "madvise":
        assert (huge_kb >= 100 * 1024) if huge_pages else (huge_kb == 0), huge_kb
    else:
        assert mode in ("always", "never"), mode


def test_given_huge_pages_off_or_set_by_the_operator_then_the_tunable_is_left_alone(
    monkeypatch, tmp_path
):
    from asr.config import decoder_env

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    off = decoder_env(AsrConfig(huge_pages=False), tmp_path)
    assert "GLIBC_TUNABLES" not in off and off["PYTHONPATH"] == f"{tmp_path}:/elsewhere"
    assert decoder_env(AsrConfig(), tmp_path)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert decoder_env(AsrConfig(), tmp_path)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
