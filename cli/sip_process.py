"""`hotline sip`: the SIP edge as a process of its own — answers calls into tickets (live or
offline transcripts), tells ticket status by keypad, dials the satisfaction callbacks, and
drains on SIGTERM (new calls refused, live ones given time to end, then an apology).
Registered on `cli.processes.processes_app`, beside the other process commands.

Domain modules are imported inside the command, so that `--help` stays fast.
"""

from __future__ import annotations

import hmac
import signal
import socket
from typing import Any

import typer

from cli.common import config_error, fail, friendly_errors
from cli.processes import _sip_host, _softphone_line, check_model, processes_app
from core import logging_setup
from core.clock import SystemClock
from core.db import make_engine, make_session_factory
from core.settings import get_settings


def _drain(edge: Any, prompts: Any, *, timeout_s: float, hard_stop: Any) -> None:
    """Stops new calls at ``edge`` and waits up to ``timeout_s`` for the live ones to end;
    those still live then hear the apology and are hung up (their records are written by
    the normal end of a call). ``hard_stop`` set (a second signal) cuts the wait short."""
    import threading
    import time

    from telephony.flows import apologise

    edge.drain()
    deadline = time.monotonic() + timeout_s
    while edge.live_calls and time.monotonic() < deadline:
        if hard_stop.wait(0.2):
            return
    calls = edge.calls()
    if not calls:
        return
    typer.echo(f"{len(calls)} call(s) still live after {timeout_s:g} s: apologising")
    threads = [
        threading.Thread(target=apologise, args=(call,), kwargs={"prompts": prompts}, daemon=True)
        for call in calls
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if hard_stop.wait(0.2):
            return


@processes_app.command("sip")
@friendly_errors
def sip() -> None:
    """The SIP edge: answers calls into tickets (live or offline transcripts), tells ticket
    status by keypad, and dials the satisfaction callbacks. One per line/PBX trunk."""
    import logging
    import threading
    from functools import partial

    # A call's story (answered, ticket, live ASR full, transcribed, dispatched) is told in
    # these lines, each with its call's SIP Call-ID.
    logging_setup.configure(get_settings(), process="sip")
    from accounts.privacy import mask_logs

    mask_logs()  # no caller's number in clear in the log, the SIP edge's lines included

    from datetime import timedelta

    from asr.recognizer import AsrError
    from hotline.calls import recovery, setup
    from hotline.calls.dialer import CallbackDialer
    from hotline.calls.keys import known_call_key
    from hotline.calls.seats import DbSeatStore
    from hotline.calls.services import CallServices, send_transcription_task
    from telephony.flows import serve_inbound
    from telephony.prompts import PromptError
    from telephony.sip_config import SipConfig, SipLine
    from telephony.sip_edge import SipEdge

    settings = get_settings()
    t = settings.telephony
    check_model(settings)  # before minutes of prompt synthesis
    try:
        prompts = setup.prompt_set(settings)
        made = prompts.ensure()
        recognizer = setup.live_recognizer(settings)
        recognizer.load()  # the decoder processes start and load the model
        engine = make_engine(settings.db_url)
        session_factory, clock = make_session_factory(engine), SystemClock()
        # This process's identity: in its edge row (crash recovery) and in every seat
        # binding the registrar writes (which edge a phone registered with).
        me = recovery.EdgeIdentity.new(socket.gethostname())
        acd = settings.acd
        edge = SipEdge(
            SipConfig(
                host=t.host,
                port=t.port,
                mode=t.mode,
                allow=tuple(t.allow),
                lines=tuple(SipLine(**line.model_dump()) for line in t.lines),
                advertised_host=_sip_host(settings)
                if t.host in ("0.0.0.0", "::")
                else t.advertised_host,
                rtp_low=t.rtp_low,
                rtp_high=t.rtp_high,
                rtp_latch=t.rtp_latch,
                max_calls=t.max_calls,
                call_key_known=known_call_key(session_factory),
                # Operators' phones register here (digest auth, bindings in the database);
                # without seats REGISTER is answered 405 as before.
                seats=DbSeatStore(session_factory) if acd.enabled else None,
                seat_realm=acd.realm,
                register_min_expires=acd.register_min_expires,
                register_max_expires=acd.register_max_expires,
                digest_algorithms=tuple(acd.digest_algorithms),
                # The same on every edge of a deployment, so that they accept each other's
                # nonces; derived, so that the secret key itself never goes into SIP.
                registrar_secret=hmac.new(
                    settings.secret_key.encode(), b"sip-registrar-nonce", "sha256"
                ).hexdigest(),
                edge_id=me.id,
                media_relay=t.media_relay,
                rtpengine_ng=t.rtpengine_ng,
                rtp_timeout_s=t.rtp_timeout_s,
            )
        )
    except (PromptError, AsrError, ValueError) as exc:
        fail(config_error(exc) or str(exc))
    # Crash recovery: this process's own row and heartbeat, and before any call is answered
    # the calls a predecessor on this host (or any edge gone silent) left open are closed.
    recovery.register_edge(session_factory, edge=me, now=clock.now())
    try:
        from core import bell as doorbell

        closed = recovery.recover_calls(
            session_factory,
            now=clock.now(),
            stale_after=timedelta(seconds=t.edge_stale_after_s),
            enqueue_transcription=send_transcription_task,
            this_edge=me,
            # operators freed from a lost call wrap up as after any call, and the other
            # edges' queues hear of it
            wrap_up_s=settings.acd.wrap_up_s,
            bell=doorbell.for_settings(settings) if settings.acd.enabled else None,
        )
    except Exception:  # the beat's sweep tries again every minute
        logging.getLogger(__name__).exception("recovering the calls of lost SIP edges failed")
        closed = []
    from dispatch import classifier

    classifier.watch(settings.data_dir / classifier.MODEL_FILE)  # calls routed here get it too
    services = CallServices(
        session_factory=session_factory,
        clock=clock,
        settings=settings,
        recognizer=recognizer,
        edge_id=me.id,
    )
    flow = setup.flow_settings(settings)
    # Operators' seats: the queue (ACD) rings the longest-idle ready operator's phone and
    # bridges the call; with nobody signed in calls go to the voice-intake robot as before.
    operators: Any = None
    acd_engine: Any = None
    control: Any = None
    handler: Any
    if settings.acd.enabled:
        from core import bell as doorbell
        from hotline.calls.agent_pool import DbAgentPool
        from hotline.calls.control_runner import CallControl
        from hotline.calls.operators import OperatorCalls, call_handler
        from hotline.calls.reconciler import start_reconciler
        from telephony.acd import Acd, AcdConfig
        from telephony.acd_dial import DialRinger
        from telephony.queue_flow import QueueSettings

        bell = doorbell.for_settings(settings)
        pool = DbAgentPool(
            session_factory, clock=clock, wrap_up_s=settings.acd.wrap_up_s, bell=bell
        )
        operators = OperatorCalls(services, settings=settings)
        control = CallControl(
            session_factory,
            clock,
            dial=edge.dial,
            seat_target=edge.seat_target,
            outside_uri=settings.acd.outside_uri or t.callback_uri,
            wrap_up_s=settings.acd.wrap_up_s,
            ring_timeout_s=settings.acd.transfer_ring_timeout_s,
            bell=bell,
        )
        ringer = DialRinger(dial=edge.dial, target_of=edge.seat_target, acd=lambda: acd_engine)
        acd_engine = Acd(
            pool=pool,
            ringer=ringer,
            config=AcdConfig.from_settings(settings.acd),
            on_result=operators.on_result,
        )
        handler = call_handler(
            services=services,
            operators=operators,
            acd=acd_engine,
            pool=pool,
            prompts=prompts,
            flow=flow,
            queue_settings=QueueSettings.from_settings(settings.acd),
            control=control,
        )
        control.start()
        pool.watch(acd_engine.wake)  # an operator ready in any process: offered at once
        acd_engine.start()
        # Stuck states (an operator held by a call long gone, a wrap-up nobody ends, a
        # caller the queue still shows): compared with the calls that exist and repaired.
        reconciler = start_reconciler(
            session_factory,
            settings=settings,
            clock=clock,
            engine=acd_engine,
            edge=edge,
            edge_id=me.id,
            bell=bell,
        )
    else:
        handler = partial(serve_inbound, prompts=prompts, hooks=services.hooks(), settings=flow)
    stop = threading.Event()
    recovery.Heartbeat(
        session_factory, edge_id=me.id, clock=clock, interval_s=t.edge_heartbeat_s, stop=stop
    ).start()
    # The first SIGTERM/SIGINT drains the edge (no new calls, the live ones end or hear an
    # apology); a second one during the drain stops at once.
    draining, hard_stop = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        if draining.is_set():
            hard_stop.set()
        draining.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            edge.start(on_call=handler, on_ended=services.on_ended)
        except OSError as exc:
            fail(f"cannot listen for SIP on {t.host}:{t.port} (HOTLINE_TELEPHONY__PORT): {exc}")
        host, port = edge.address
        typer.echo(
            f"SIP edge listening on {host}:{port} ({t.mode}); point a softphone at "
            f"{_softphone_line(settings)}"
        )
        typer.echo(f"  prompts:    {prompts.directory} ({len(made)} generated)")
        typer.echo(f"  recordings: {settings.recording_dir}")
        typer.echo(f"  edge:       {me.id} ({len(closed)} lost call(s) recovered)")
        from core.runtime import keep_start_up_out_of_full_collections

        logging.getLogger(__name__).info(
            "%d start-up objects kept out of the garbage collector's full passes",
            keep_start_up_out_of_full_collections(),
        )
        if t.callback_uri:
            dialer = CallbackDialer(services=services, endpoint=edge, prompts=prompts, flow=flow)
            # No callback is claimed or dialled once the drain begins (a survey under way
            # is a live call: it may finish within the drain timeout).
            threading.Thread(
                target=dialer.run, args=(draining,), name="callbacks", daemon=True
            ).start()
            typer.echo(f"  callbacks:  dialled as {t.callback_uri}")
        else:
            typer.echo("  callbacks:  off (set HOTLINE_TELEPHONY__CALLBACK_URI to dial them)")
        # Calls are answered meanwhile; one that comes first decodes on a fresh recognizer.
        threading.Thread(
            target=setup.warm_recognizers,
            # Stops when the edge starts to stop (its decoders may already be gone).
            args=(settings, recognizer, prompts, draining),
            name="asr-warm-up",
            daemon=True,
        ).start()
        while not draining.wait(1.0):
            pass
        typer.echo(f"draining the SIP edge: new calls get 503, {edge.live_calls} call(s) live")
        _drain(edge, prompts, timeout_s=t.drain_timeout_s, hard_stop=hard_stop)
        typer.echo("stopping the SIP edge")
    finally:
        stop.set()
        draining.set()  # the callback dialer's stop, also when leaving on an error
        if control is not None:
            control.stop()
        if acd_engine is not None:
            reconciler.stop()
            acd_engine.stop()
        edge.stop()
        if operators is not None:
            operators.close()
        services.close()
        recovery.mark_stopped(session_factory, edge_id=me.id, now=clock.now())
        if hasattr(recognizer, "close"):
            recognizer.close()
        engine.dispose()
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)
