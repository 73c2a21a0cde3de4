"""The Replay screen, driven by Textual's Pilot over sessions recorded through the real bastion.

What the reviewer sees is read from the widgets themselves: the strips the terminal view draws
(text, colours, and that no control character is ever in them), the timeline's state, the
verification bar, the status line, the side panel's lists; and the audit log."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from rich.segment import Segment
from textual.widgets import OptionList, Static

from tests.helpers import frame_spans
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen
from zsp_tui.tui.widgets.replay_panel import ReplayPanel
from zsp_tui.tui.widgets.terminal_view import TerminalView
from zsp_tui.tui.widgets.timeline import Timeline

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _app(reviewed, user: str = "carol") -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"))


async def _until(pilot, cond, timeout: float = 60.0) -> None:
    """Let the app run (workers, timers) until ``cond()`` holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the replay screen")
        await pilot.pause(0.05)


async def _open(pilot, app: ReviewApp, sid: str, **kw) -> ReplayScreen:
    app.open_replay(sid, **kw)
    await _until(pilot, lambda: isinstance(app.screen, ReplayScreen))
    screen = app.screen
    assert isinstance(screen, ReplayScreen)
    await _until(pilot, lambda: screen.playback is not None or screen.problem is not None)
    await _until(pilot, lambda: screen.report is not None or screen.problem is not None or screen.live)
    await _settle(pilot, screen)
    return screen


async def _settle(pilot, screen: ReplayScreen) -> None:
    await _until(pilot, lambda: not screen._seeking and screen._pending_us is None)
    await pilot.pause(0.1)


async def _listed(pilot, screen: ReplayScreen) -> None:
    """Wait until every command is found and the panel and timeline show them (a tick later)."""
    await _until(pilot, lambda: screen.commands_done and screen._listed == (screen.overview.version, screen.commands_label()))
    await pilot.pause()


def _rows(screen: ReplayScreen) -> list[str]:
    return [strip.text.rstrip() for strip in screen.query_one(TerminalView).row_strips()]


def _segments(screen: ReplayScreen) -> list[Segment]:
    return [seg for strip in screen.query_one(TerminalView).row_strips() for seg in strip]


def _drawn(screen: ReplayScreen) -> list[Segment]:
    """Every segment the view draws at its current size and scroll (what reaches the terminal)."""
    view = screen.query_one(TerminalView)
    return [seg for y in range(view.size.height) for seg in view.render_line(y)]


async def test_shows_the_recorded_screen_with_colours_at_the_recorded_size(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, reviewed.ids["shell"])
        await pilot.press("end")
        await _settle(pilot, screen)
        rows = _rows(screen)
        assert len(rows) == 24
        assert all(strip.cell_length == 80 for strip in screen.query_one(TerminalView).row_strips())
        assert any("kubectl delete pod web-7f" in r for r in rows)
        reds = [s for s in _segments(screen) if s.text.strip() == "red"]
        assert reds and reds[0].style is not None and reds[0].style.color is not None
        assert reds[0].style.color.number == 1  # palette red, as the session drew it
        assert "VALID" in str(screen.verdict_text())
        assert not screen.query_one(TerminalView).cropped


async def test_play_pause_speed_seek_and_step_move_the_playhead(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, reviewed.ids["local"])
        pb = screen.playback
        assert pb is not None and not pb.paused  # opened without a moment: it plays
        await pilot.press("space")
        assert pb.paused
        paused_at = pb.pos_us
        await pilot.pause(0.3)
        assert pb.pos_us == paused_at
        assert "paused" in str(screen.status_text())
        for key, speed in (("plus", 2.0), ("plus", 4.0), ("right_square_bracket", 8.0), ("minus", 4.0),
                           ("left_square_bracket", 2.0)):
            await pilot.press(key)
            assert pb.speed == speed
        for _ in range(8):
            await pilot.press("plus")
        assert pb.speed == 16.0 and "16x" in str(screen.status_text())
        for _ in range(10):
            await pilot.press("minus")
        assert pb.speed == 0.25
        await pilot.press("i")
        assert not pb.skip_idle and "real pauses" in str(screen.status_text())
        await pilot.press("i")

        await pilot.press("home")
        await _settle(pilot, screen)
        assert pb.pos_us == 0 and pb.ph.t_us == 0
        first = _rows(screen)
        await pilot.press("full_stop")
        assert pb.paused and pb.ph.frame > 0
        stepped = pb.ph.frame
        while _rows(screen) == first:  # step until the screen changes (the first output)
            await pilot.press("full_stop")
        assert pb.ph.frame > stepped or _rows(screen) != first
        now = pb.ph.frame
        await pilot.press("comma")
        await _settle(pilot, screen)
        assert pb.ph.frame < now

        duration = pb.duration_us
        await pilot.press("end")
        await _settle(pilot, screen)
        assert pb.pos_us == duration
        assert any("END-49" in r for r in _rows(screen))
        await pilot.press("home")
        await _settle(pilot, screen)
        await pilot.press("right")  # +5 s (the session is shorter: its end)
        await _settle(pilot, screen)
        assert pb.pos_us == min(5_000_000, screen._end_us())
        await pilot.press("left")
        await _settle(pilot, screen)
        assert pb.pos_us == max(0, min(5_000_000, screen._end_us()) - 5_000_000)

        # play: the clock moves and frames are applied
        await pilot.press("home")
        await _settle(pilot, screen)
        await pilot.press("space")
        assert not pb.paused
        await _until(pilot, lambda: pb.pos_us > 200_000)
        await pilot.press("space")

        # click the timeline: seek there
        timeline = screen.query_one(Timeline)
        x = timeline.size.width * 3 // 4
        await pilot.click(Timeline, offset=(x, 0))
        await _settle(pilot, screen)
        assert pb.pos_us == min(timeline.t_of(x), screen._end_us()) or pb.pos_us == timeline.t_of(x)
        assert timeline.x_of(pb.pos_us) == x
        assert timeline.state.pos_us == pb.pos_us


async def test_commands_panel_lists_commands_and_selecting_one_jumps_there(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await _open(pilot, app, reviewed.ids["shell"])
        await _listed(pilot, screen)
        panel = screen.query_one(ReplayPanel)
        assert panel.display
        clist = panel.query_one("#commands", OptionList)
        texts = [str(clist.get_option_at_index(i).prompt) for i in range(clist.option_count)]
        assert any("echo kubectl delete pod web-7f" in t for t in texts), texts
        assert any("ls / | head -3" in t for t in texts), texts
        klist = panel.query_one("#keys", OptionList)
        keys = [str(klist.get_option_at_index(i).prompt) for i in range(klist.option_count)]
        assert any("echo kubectl delete pod web-7f\\r" in k for k in keys), keys  # raw, escaped

        await pilot.press("home")
        await _settle(pilot, screen)
        target = next(c for c in panel.commands if "kubectl" in c.text)
        i = next(i for i, t in enumerate(texts) if "kubectl" in t)
        clist.focus()
        clist.highlighted = i
        await pilot.press("enter")
        await _settle(pilot, screen)
        pb = screen.playback
        # paused at the command: from its Enter to the first screen showing its line
        assert pb is not None and pb.paused and target.t_us <= pb.pos_us < target.t_us + 2_000_000
        assert any(r.endswith("echo kubectl delete pod web-7f") for r in _rows(screen))
        # n / p: next and previous command
        screen.set_focus(None)
        await pilot.press("n")
        await _settle(pilot, screen)
        later = sorted(c.t_us for c in panel.commands if c.t_us > target.t_us)
        assert later[0] <= pb.pos_us < later[0] + 2_000_000
        assert any(r.endswith("printf '\\033[31mred\\033[0m plain\\n'") for r in _rows(screen)), _rows(screen)
        # what was typed, escaped once (a backslash shows as two, a CR as \r), never drawn raw
        assert "typed: printf '\\\\033[31mred\\\\033[0m plain\\\\n'\\r" in str(screen.status_text())
        await pilot.press("p")
        await _settle(pilot, screen)
        assert target.t_us <= pb.pos_us < later[0]
        marks = screen.query_one(Timeline).markers_by_column(screen.query_one(Timeline).size.width)
        assert any(m.kind.value == "command" for m in marks.values())


async def test_opening_at_a_search_hit_shows_that_moment_highlighted(reviewed) -> None:
    ctx = ReviewContext.open(reviewed.data, "carol", "console")
    hits = ctx.search_index().search("web-7f", session_id=reviewed.ids["shell"])
    hit = next(h for h in hits if h.kind.value == "output")
    app = ReviewApp(ctx)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, hit.session_id, at_us=hit.t_us, highlight="web-7f")
        pb = screen.playback
        # at the hit, or the first frame after it whose screen shows the line (its echo)
        assert pb is not None and pb.paused and hit.t_us <= pb.pos_us < hit.t_us + 2_000_000
        assert pb.ph.frame >= hit.frame
        view = screen.query_one(TerminalView)
        assert view.highlighted_rows >= 1
        marked = [s for s in _segments(screen) if s.style is not None and s.style.bgcolor is not None
                  and s.style.bgcolor.name == "yellow"]
        assert "".join(s.text for s in marked).lower().count("web-7f") >= 1
        timeline = screen.query_one(Timeline)
        assert timeline.state.hit_us == hit.t_us
        marks = timeline.markers_by_column(timeline.size.width)
        assert marks[timeline.x_of(hit.t_us)].kind.value == "hit"
        assert "hit: web-7f" in str(screen.status_text())


async def test_opening_a_replay_is_audited_once(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(120, 36)) as pilot:
        await _open(pilot, app, reviewed.ids["exec"], at_us=0)
        await pilot.pause(0.3)
    events = [e for e in reviewed.svc.audit_events() if e.event == "review.replay"]
    assert [(e.actor, e.session_id) for e in events] == [("carol", reviewed.ids["exec"])]
    assert events[0].fields.get("at_us") == 0


async def test_a_reviewer_without_the_replay_role_sees_nothing(reviewed) -> None:
    app = _app(reviewed, "bob")  # approver: Live and Requests only
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        app.push_screen(ReplayScreen(app.ctx, reviewed.ids["shell"]))
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        assert screen.playback is None and "reviewer or admin" in str(screen.verdict_text())
        assert _rows(screen) == []
    assert not [e for e in reviewed.svc.audit_events() if e.event == "review.replay"]


def _flip_in_frame(path: Path, needle: bytes) -> int:
    """Flip a byte inside the first output frame holding ``needle``; its sequence number."""
    from recorder import FrameKind, load_trusted_keys
    from replay import load

    trusted = load_trusted_keys(path.parent.parent / "allowed_signers")
    frames, report = load(path, trusted)
    assert report.valid
    seq = next(f.seq for f in frames if f.kind is FrameKind.OUTPUT and needle in f.data)
    data = bytearray(path.read_bytes())
    a, b = frame_spans(bytes(data))[seq]
    data[a + 4 + (b - a - 36) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return seq


async def test_a_corrupt_recording_shows_where_the_chain_breaks_and_marks_the_rest_untrusted(reviewed) -> None:
    sid = reviewed.ids["shell"]
    path = Path(reviewed.svc.session(sid).path)
    bad = _flip_in_frame(path, b"DONE-42")
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, sid)
        verdict = str(screen.verdict_text())
        assert verdict.startswith(f"✖ CORRUPT at frame {bad} "), verdict
        assert "hash-mismatch" in verdict and "UNTRUSTED" in verdict
        assert screen.report is not None and screen.report.bad_frame == bad
        await pilot.press("end")
        await _settle(pilot, screen)
        rows = _rows(screen)
        assert not any("DONE-42" in r for r in rows)  # nothing from the broken part is shown
        banner = screen.query_one("#untrusted", Static)
        assert banner.display and "UNTRUSTED" in str(banner.render())
        timeline = screen.query_one(Timeline)
        st = timeline.state
        assert st.corrupt and st.shown_us < st.end_us
        marks = timeline.markers_by_column(timeline.size.width)
        assert any(m.kind.value == "break" for m in marks.values())
        last = timeline.render_line(0)
        reds = [seg for seg in list(last)[timeline.x_of(st.intact_us) + 1 :] if seg.style and seg.style.color
                and seg.style.color.name == "red"]
        assert reds, "the untrusted part of the timeline is red"
        # seeking into the untrusted part: the banner stays, nothing new is shown
        await pilot.click(Timeline, offset=(timeline.size.width - 1, 0))
        await _settle(pilot, screen)
        assert screen.query_one("#untrusted", Static).display
        assert not any("DONE-42" in r for r in _rows(screen))
        # The session was shorter than the bastion's 2 s between checkpoints: only its seal's signature
        # covered its output, so nothing at all is trusted, even at the start.
        assert st.shown_us == 0
        await pilot.press("home")
        await _settle(pilot, screen)
        assert screen.query_one("#untrusted", Static).display


async def test_a_recording_that_is_not_the_session_shows_nothing(reviewed) -> None:
    shell = Path(reviewed.svc.session(reviewed.ids["shell"]).path)
    local = Path(reviewed.svc.session(reviewed.ids["local"]).path)
    local.write_bytes(shell.read_bytes())  # a genuine recording, of another session
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, reviewed.ids["local"])
        await _until(pilot, lambda: screen.problem is not None)
        assert "wrong-session" in str(screen.verdict_text())
        assert screen.playback is None and _rows(screen) == []


async def test_at_80x24_the_screen_is_cropped_and_scrollable(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open(pilot, app, reviewed.ids["local"])
        await pilot.press("end")
        await _settle(pilot, screen)
        view = screen.query_one(TerminalView)
        assert not screen.query_one(ReplayPanel).display  # collapsed at this width
        assert view.cropped and "CROPPED 80x24" in str(screen.status_text())
        assert view.max_scroll_y > 0
        drawn = [s.text for y in range(view.size.height) for s in view.render_line(y)]
        assert "END-49" in "".join(drawn)  # follows the cursor: the last line is in view
        for _ in range(10):  # the keyboard scrolls the cropped view, to the top
            await pilot.press("ctrl+up")
        await pilot.pause()
        assert view.scroll_offset.y == 0
        top = "".join(s.text for s in view.render_line(0))
        assert top.strip() == _rows(screen)[0].strip()
        await pilot.press("question_mark")  # help lists the replay keys
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("c")  # the panel can still be shown, over part of the screen
        assert screen.query_one(ReplayPanel).display
        await pilot.press("c")
        await pilot.press("space")
        await pilot.press("home")
        await _settle(pilot, screen)
        assert screen.playback is not None and screen.playback.pos_us == 0


def _shell(env):
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    chan = client.invoke_shell(term="xterm", width=80, height=24)
    return client, chan


def _live_session(env, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [s for s in env.svc.sessions() if s.ended_at is None]
        if live:
            return live[-1].id
        time.sleep(0.05)
    raise AssertionError("no live session in the store")


def _ended(env, sid: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while env.svc.session(sid).ended_at is None:
        if time.monotonic() > deadline:
            raise AssertionError("the session did not end")
        time.sleep(0.1)


async def test_a_live_session_is_followed_as_it_happens(env) -> None:
    from tests.helpers import read_until

    env.grant()
    client, chan = await asyncio.to_thread(_shell, env)
    try:
        buf = await asyncio.to_thread(read_until, chan, b"", b"$ ")
        sid = await asyncio.to_thread(_live_session, env)
        app = ReviewApp(ReviewContext.open(env.data, "alice", "console"))
        async with app.run_test(size=(120, 36)) as pilot:
            screen = await _open(pilot, app, sid, follow=True)
            assert screen.live and str(screen.verdict_text()).startswith("● LIVE")
            chan.send(b"echo live-marker-$((3*5))\r")
            buf = await asyncio.to_thread(read_until, chan, buf, b"live-marker-15")
            # shown once the bastion's next checkpoint signs it (at most ~2 s), without any key
            await _until(pilot, lambda: any(r == "live-marker-15" for r in _rows(screen)))
            assert screen.query_one(Timeline).state.end_us > 0
            chan.send(b"exit\r")
            await asyncio.to_thread(chan.recv_exit_status)
            await _until(pilot, lambda: screen.ended is not None)
            verdict = str(screen.verdict_text())
            assert "ENDED: exit" in verdict and "VALID" in verdict, verdict
            assert any(r == "live-marker-15" for r in _rows(screen))
    finally:
        client.close()
    # Following a live session is audited once, as review.watch (no review.replay beside it).
    events = [e for e in env.svc.audit_events() if e.event in ("review.watch", "review.replay")]
    assert [(e.event, e.actor, e.session_id) for e in events] == [("review.watch", "alice", sid)]


HOSTILE = [
    # a title, a clipboard write (OSC 52), the alternate screen, a cursor-position query, DECRQSS
    b"printf '\\033]0;evil-title\\007\\033]52;c;ZXZpbA==\\007\\033[?1049hALT-SCREEN\\033[6n\\033P$qm\\033\\\\'",
    b"printf '\\033[?1049lback\\033]8;;http://evil/\\033\\\\link\\033]8;;\\033\\\\ bidi:\\342\\200\\256dlrow\\n'",
    b"printf 'nul:\\001\\002\\033[2Jcleared \\233 c1\\n'",
    b"head -c 1000000 /dev/zero | tr '\\0' Y; echo; echo HOSTILE-DONE",
]


async def test_hostile_output_never_reaches_the_reviewers_terminal(env) -> None:
    from tests.helpers import read_until

    env.grant()
    client, chan = await asyncio.to_thread(_shell, env)
    try:
        buf = await asyncio.to_thread(read_until, chan, b"", b"$ ")
        sid = await asyncio.to_thread(_live_session, env)
        for line in HOSTILE:
            chan.send(line + b"\r")
            await asyncio.sleep(0.3)
        await asyncio.to_thread(read_until, chan, buf, b"HOSTILE-DONE", 30)
        chan.send(b"exit\r")
        await asyncio.to_thread(chan.recv_exit_status)
    finally:
        client.close()
    await asyncio.to_thread(_ended, env, sid)
    app = ReviewApp(ReviewContext.open(env.data, "alice", "console"))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open(pilot, app, sid)
        await _until(pilot, lambda: screen.report is not None)
        pb = screen.playback
        assert pb is not None
        pb.paused = True
        end = screen._end_us()
        seen_alt = False
        for i in range(41):
            screen._seek(end * i // 40)
            await _settle(pilot, screen)
            view = screen.query_one(TerminalView)
            assert view.screen_value is not None
            seen_alt = seen_alt or view.screen_value.alternate
            for seg in _segments(screen) + _drawn(screen):
                assert not _CONTROL.search(seg.text), repr(seg.text)
            assert all(strip.cell_length == view.screen_value.cols for strip in view.row_strips())
            # the title is only where the typed command line shows it, never set or drawn otherwise
            assert all("printf" in r for r in _rows(screen) if "evil-title" in r)
            assert not any(seg.style is not None and seg.style.link for seg in _segments(screen))
        assert seen_alt  # the alternate screen was shown, inside the emulator
        rows = _rows(screen)
        assert any("HOSTILE-DONE" in r for r in rows) and any(set(r) == {"Y"} for r in rows)
        assert app.title == "zsp review"


async def test_the_seek_index_is_cached_and_a_stale_cache_is_dropped_at_the_verdict(reviewed) -> None:
    sid = reviewed.ids["shell"]
    cache = reviewed.data.root / "cache" / "seek" / f"{sid}.seek"
    cache.unlink()  # written when the session was indexed for search: here, the first open builds it
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, sid)
        await _until(pilot, lambda: screen.commands_done and cache.exists())  # saved in a worker
        assert screen._provisional is None  # built now, cached for next time
        await pilot.press("escape")
        await pilot.pause()
        screen = await _open(pilot, app, sid, at_us=0)
        assert screen._provisional is not None  # from the cache, before and after the verdict
        assert "VALID" in str(screen.verdict_text())
        await _listed(pilot, screen)
        assert any("kubectl" in c.text for c in screen.query_one(ReplayPanel).commands)
        await pilot.press("escape")
        await pilot.pause()
        # The recording changes after its index was cached (same size): what the cache showed is
        # dropped when the verdict arrives, and the index is rebuilt from the file as it is now.
        path = Path(reviewed.svc.session(sid).path)
        _flip_in_frame(path, b"DONE-42")
        screen = await _open(pilot, app, sid)
        await _until(pilot, lambda: screen.report is not None)
        await _until(pilot, lambda: screen._provisional is None and screen.playback is not None)
        await _settle(pilot, screen)
        assert str(screen.verdict_text()).startswith("✖ CORRUPT")
        await pilot.press("end")
        await _settle(pilot, screen)
        assert not any("DONE-42" in r or "kubectl" in r for r in _rows(screen))


def _register(reviewed, path: Path, reason: str = "exit") -> str:
    """Register the recording at ``path`` as a sealed session of the data dir (renamed to its id)."""
    from datetime import UTC, datetime

    from replay import verify
    from zsp_tui.models import SessionRecord

    d = reviewed.data
    report = verify(path, d.trusted_keys())
    assert report.valid and report.header is not None
    sid = str(report.header.session_id)
    final = d.recordings / f"{sid}.zsprec"
    path.rename(final)
    record = SessionRecord(sid, "alice", "srv", "root", None, None, "127.0.0.1:1", str(final), datetime.now(UTC))
    reviewed.svc.session_started(record)
    reviewed.svc.session_ended(record, None, reason, report.head.hex())
    return sid


def _write_session(reviewed, name: str) -> tuple[str, Path]:
    """A recording written by the recorder with the data dir's key (events the bastion writes:
    masked input, a grant warning, a revocation; checkpoints 2 s apart), registered as a session."""
    from recorder import FileSink, RecordingWriter, SessionMeta

    d = reviewed.data
    clock = [10**12]
    path = d.recordings / f"{name}.zsprec"
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(),
                        SessionMeta(user="alice", target="srv", login="root", term="xterm", cols=80, rows=24),
                        clock=lambda: clock[0], wall_clock=lambda: 1_790_000_000 * 10**9 + clock[0])

    def at(seconds: float) -> int:
        clock[0] = 10**12 + int(seconds * 1e9)
        return clock[0]

    w.output(b"$ ", at_ns=at(0.1))
    w.input(b"sudo ls\r", at_ns=at(0.5))
    w.output(b"sudo ls\r\n[sudo] password for root: ", at_ns=at(0.6))
    w.event("input.masked", "input at a password prompt withheld", at_ns=at(1.0), bytes=8)
    w.output(b"\r\n\x1b[32mfile-one\x1b[0m\r\n$ ", at_ns=at(1.2))
    w.tick(at_ns=at(3.5))
    w.event("grant.warning", "grant r-1 expires in 5 minutes", at_ns=at(4.0), seconds_left=300)
    w.output(b"echo before-break\r\nbefore-break\r\n$ ", at_ns=at(5.0))
    w.tick(at_ns=at(7.5))
    w.output(b"intact-unsigned\r\n", at_ns=at(7.8))
    w.output(b"echo after-break\r\nafter-break\r\n$ ", at_ns=at(8.0))
    w.event("grant.revoked", "grant r-1 revoked by bob", at_ns=at(9.0))
    w.close(None, "revoked", at_ns=at(9.5))
    sid = _register(reviewed, path, "revoked")
    return sid, d.recordings / f"{sid}.zsprec"


async def test_timeline_marks_masked_input_warnings_and_revocation(reviewed) -> None:
    sid, _path = _write_session(reviewed, "events")
    app = _app(reviewed)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await _open(pilot, app, sid, at_us=1_500_000)
        await _listed(pilot, screen)
        timeline = screen.query_one(Timeline)
        kinds = {m.kind.value: m for m in timeline.markers_by_column(timeline.size.width).values()}
        assert {"masked", "warning", "revocation"} <= set(kinds), kinds
        assert kinds["revocation"].label == "grant.revoked: grant r-1 revoked by bob"
        assert timeline.x_of(kinds["masked"].t_us) < timeline.x_of(kinds["warning"].t_us)
        marks = "".join(seg.text for seg in timeline.render_line(1))
        assert "*" in marks and "!" in marks and "R" in marks
        klist = screen.query_one("#keys", OptionList)
        keys = [str(klist.get_option_at_index(i).prompt) for i in range(klist.option_count)]
        assert any("masked input, 8 bytes" in k for k in keys), keys
        assert "typed: masked, 8 bytes" in str(screen.status_text())
        assert "ended: revoked" in str(screen.verdict_text())


async def test_content_after_a_chain_break_is_untrusted_and_what_was_signed_before_it_is_shown(reviewed) -> None:
    sid, path = _write_session(reviewed, "broken")
    bad = _flip_in_frame(path, b"after-break")
    app = _app(reviewed)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await _open(pilot, app, sid, at_us=6_000_000)
        assert str(screen.verdict_text()).startswith(f"✖ CORRUPT at frame {bad} (00:07.800")
        rows = _rows(screen)
        assert "before-break" in rows and not screen.query_one("#untrusted", Static).display
        timeline = screen.query_one(Timeline)
        st = timeline.state
        assert st.corrupt and st.shown_us == 7_500_000 and st.intact_us == 7_800_000 and st.end_us >= 9_000_000
        line = list(timeline.render_line(0))
        assert line[timeline.x_of(2_000_000)].style.color.name == "green"  # signed, shown
        assert line[timeline.x_of(7_650_000)].style.color.name == "yellow"  # intact, not signed
        assert line[timeline.x_of(9_000_000)].style.color.name == "red"  # after the break
        await pilot.press("end")
        await _settle(pilot, screen)
        banner = screen.query_one("#untrusted", Static)
        assert banner.display and f"chain breaks at frame {bad}" in str(banner.render())
        assert not any("after-break" in r or "intact-unsigned" in r for r in _rows(screen))
        await pilot.click(Timeline, offset=(timeline.x_of(9_000_000), 0))
        await _settle(pilot, screen)
        assert screen.playback.pos_us > st.shown_us and banner.display
        assert not any("after-break" in r for r in _rows(screen))
        await pilot.press("home")
        await _settle(pilot, screen)
        assert not banner.display


def test_large_output_frames_are_fed_in_slices_between_ticks(reviewed) -> None:
    """Playback never applies more than one slice of a big frame per look at the keyboard, and
    ends on exactly the screen the seek index shows for that moment."""
    from recorder import FrameKind
    from replay import Seeker, Slicer, build_index, load, verify
    from zsp_tui.tui import playback

    path = Path(reviewed.svc.session(reviewed.ids["local"]).path)
    trusted = reviewed.data.trusted_keys()
    frames, _ = load(path, trusted)
    biggest = max(len(f.data) for f in frames if f.kind is FrameKind.OUTPUT)
    assert biggest > 3 * 256
    seeker = Seeker(path, build_index(path, trusted, verify(path, trusted)))
    pb = playback.Playback(seeker)
    pb.slicer = Slicer(start=256, high=256)  # slices of 256 bytes (one shrinks only past 20 ms)
    pb.skip_idle = False
    pb.pos_us = seeker.duration_us  # everything is due
    mid_frame = 0
    while not pb.at_end:
        pb.tick(0.0, 0.0, time.monotonic)  # no time budget: one slice (or one small frame) per tick
        if pb._partial is not None:  # the tick returned to the UI in the middle of a frame
            mid_frame += 1
    assert mid_frame >= biggest // 256 - 1
    assert pb.ph.terminal.screen().lines == seeker.screen_at(seeker.duration_us)[0].lines


def test_a_costly_output_frame_never_holds_the_ui_for_long(tmp_path, key) -> None:
    """One frame of 800 x (DECALN, ED 2) at 1000x500: about 6 s of emulator time in 5.6 KB. Slices
    were a fixed 64 KiB, so the frame went in whole and the app drew nothing and read no key for
    that long. Slices are now sized by what they cost (about 20 ms each), starting small."""
    from replay import Seeker, build_index, verify
    from tests.search_helpers import Script
    from zsp_tui.tui import playback

    path = tmp_path / "costly.zsprec"
    s = Script(path, key, cols=1000, rows=500)
    s.at(0).out(b"hello\r\n")
    s.at(0.5).out(b"\x1b#8\x1b[2J" * 800)
    s.close()
    seeker = Seeker(path, build_index(path, [key.public], verify(path, [key.public])))
    pb = playback.Playback(seeker)
    pb.pos_us = seeker.duration_us  # everything is due
    longest = 0.0
    for _ in range(20):  # the first 20 looks at the keyboard, each after one slice
        started = time.monotonic()
        pb.tick(0.0, 0.0, time.monotonic)
        longest = max(longest, time.monotonic() - started)
    assert pb._partial is not None, "the frame went in whole"
    assert longest < 1, f"one tick held the UI for {longest:.1f} s"


async def test_opening_far_into_an_unindexed_recording_waits_for_the_index_to_get_there(reviewed) -> None:
    """No cached index: the index is built while the screen waits; the moment shown is the right one
    (not the end of what happened to be indexed when the seek was asked for)."""
    from datetime import UTC, datetime

    from recorder import FileSink, RecordingWriter, SessionMeta
    from replay import verify
    from zsp_tui.models import SessionRecord

    d = reviewed.data
    clock = [10**12]
    path = d.recordings / "long.zsprec"
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(),
                        SessionMeta(user="alice", target="srv", login="root", term="xterm", cols=80, rows=24),
                        clock=lambda: clock[0], wall_clock=lambda: 1_790_000_000 * 10**9 + clock[0])
    for i in range(600):  # 60 s, about 6 MB of coloured log lines
        clock[0] = 10**12 + i * 100_000_000
        w.output(b"".join(b"\x1b[32m%06d\x1b[0m log line %d of frame %d\r\n" % (i, j, i) for j in range(250)))
        w.tick()
    clock[0] = 10**12 + 61 * 10**9
    w.output(b"the-moment-asked-for\r\n")
    clock[0] = 10**12 + 70 * 10**9
    w.output(b"later-output\r\n")
    w.close(0, "exit")
    report = verify(path, d.trusted_keys())
    sid = str(report.header.session_id)
    final = d.recordings / f"{sid}.zsprec"
    path.rename(final)
    record = SessionRecord(sid, "alice", "srv", "root", None, None, "127.0.0.1:1", str(final), datetime.now(UTC))
    reviewed.svc.session_started(record)
    reviewed.svc.session_ended(record, 0, "exit", report.head.hex())

    app = _app(reviewed)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open(pilot, app, sid, at_us=65_000_000)
        pb = screen.playback
        assert pb is not None and pb.paused and pb.pos_us == 65_000_000
        rows = _rows(screen)
        assert "the-moment-asked-for" in rows and "later-output" not in rows


_APP_IN_A_PTY = """
import sys
from pathlib import Path
from zsp_tui.datadir import DataDir
from zsp_tui.tui import ReviewApp, ReviewContext

class App(ReviewApp):
    CSS_PATH = str(Path(sys.modules[ReviewApp.__module__].__file__).parent / "app.tcss")

    def on_ready(self) -> None:
        self.open_replay(sys.argv[2], at_us=int(sys.argv[3]))

App(ReviewContext.open(DataDir(Path(sys.argv[1])), "carol", "console")).run()
"""


def test_the_app_in_a_real_terminal_writes_nothing_of_a_hostile_recording(reviewed, tmp_path) -> None:
    """End to end: the review app on a PTY (the test is the terminal) replays a recording full of
    terminal attacks; none of them is in what the app wrote to the terminal."""
    import fcntl
    import os
    import select
    import struct
    import subprocess
    import sys
    import termios

    from recorder import FileSink, RecordingWriter, SessionMeta

    d = reviewed.data
    path = d.recordings / "hostile.zsprec"
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(),
                        SessionMeta(user="alice", target="srv", login="root", term="xterm", cols=80, rows=24))
    w.output(b"$ cat evil\r\n")
    w.output(b"\x1b]0;evil-title\x07\x1b]52;c;ZXZpbA==\x07\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\")
    w.output(b"\x1b[6n\x1bP$qm\x1b\\\x1b[c\x1b[?1049hon-the-alternate-screen\x1b[?1049l")
    w.output("bidi:\u202edlrow c1:\u009b2J \x01\x02 visible-text\r\n$ ".encode())
    w.close(0, "exit")
    sid = _register(reviewed, path)
    script = tmp_path / "app_in_pty.py"
    script.write_text(_APP_IN_A_PTY)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 110, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, str(script), str(d.root), sid, str(10**9)], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    out = b""

    def pump(seconds: float) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    return

    try:
        deadline = time.monotonic() + 60
        while b"visible-text" not in out or b"VALID" not in out:
            assert time.monotonic() < deadline and proc.poll() is None, out[-2000:]
            pump(0.2)
        pump(1.0)
        os.write(master, b"q")
        deadline = time.monotonic() + 60  # all it wrote until it exited, however long that takes
        while proc.poll() is None and time.monotonic() < deadline:
            pump(0.2)
        pump(0.2)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    for attack in (b"evil-title", b"ZXZpbA==", b"evil.example", b"\x1bP$q", b"\xe2\x80\xae", b"\xc2\x9b", b"\x01\x02"):
        assert attack not in out, attack
    assert b"\x1b]52" not in out and b"\x1b]8;" not in out


async def test_nothing_is_shown_when_the_audit_log_refuses_the_event(reviewed) -> None:
    """Fail closed: a replay the audit log cannot record shows nothing of the recording, not even
    from a seek index cached by an earlier, audited replay (which is shown without reading the
    recording first)."""
    import sqlite3 as _sqlite3

    sid = reviewed.ids["shell"]
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, sid)
        await pilot.press("end")
        await _settle(pilot, screen)
        assert any("kubectl delete pod web-7f" in r for r in _rows(screen)), _rows(screen)
        await _until(pilot, lambda: screen.commands_done)
    assert list((reviewed.data.root / "cache" / "seek").glob(f"{sid}*")), "the first replay cached its index"
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.pause()
        con = _sqlite3.connect(reviewed.data.db_path)
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit log full'); END")
        con.commit()
        con.close()
        app.open_replay(sid)
        await _until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.problem is not None)
        screen = app.screen
        await pilot.pause(0.5)
        assert "cannot write the audit event" in str(screen.verdict_text())
        assert screen.playback is None
        assert not any(r.strip() for r in _rows(screen)), _rows(screen)
    assert "could not record the end of this review" in (app.problem or "")


async def test_opening_at_a_command_before_the_index_reaches_it_still_lands_on_its_line(reviewed) -> None:
    """A moment the seek index being built has not reached yet is gone to once it has, and still
    to the first screen showing the text looked for (a command's Enter comes before its echo)."""
    from recorder import FileSink, RecordingWriter, SessionMeta

    d = reviewed.data
    clock = [10**12]
    path = d.recordings / "deferred.zsprec"
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(),
                        SessionMeta(user="alice", target="srv", login="root", term="xterm", cols=80, rows=24),
                        clock=lambda: clock[0], wall_clock=lambda: 1_790_000_000 * 10**9 + clock[0])

    def at(seconds: float) -> int:
        clock[0] = 10**12 + int(seconds * 1e9)
        return clock[0]

    w.output(b"$ ", at_ns=at(0.1))
    chunk = b"".join(b"filler %06d abcdefghijklmnopqrstuvwxyz0123456789\r\n" % i for i in range(200))
    for i in range(1500):  # ~15 MB: the index takes a while to reach the command
        w.output(chunk, at_ns=at(1 + i * 0.01))
    w.output(b"$ ", at_ns=at(20.0))
    w.input(b"echo deferred-needle\r", at_ns=at(30.0))
    w.output(b"echo deferred-needle\r\ndeferred-needle\r\n$ ", at_ns=at(30.5))
    w.close(None, "exit", at_ns=at(31.0))
    sid = _register(reviewed, path)
    app = _app(reviewed)
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _open(pilot, app, sid, at_us=30_000_000, highlight="echo deferred-needle")
        pb = screen.playback
        assert pb is not None and pb.paused and 30_000_000 <= pb.pos_us < 32_000_000
        assert any(r.endswith("echo deferred-needle") for r in _rows(screen)), _rows(screen)[-3:]
        assert screen.query_one(TerminalView).highlighted_rows >= 1
