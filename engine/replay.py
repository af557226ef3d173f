"""Replay recordings through the whole engine: normalizers, pipeline, risk gate, orchestrator,
compensation and paper venues, on the recorded clock, into a real ledger.

The Runtime is the live one, built with a ReplayClock and no feeds and never started: each
recorded frame goes to the `on_frame` of the feed (or MT5 terminal) it was recorded from,
whose quotes go to `runtime.ingest` as they would live. Orders are filled by the paper
venues against the recorded books (the runtime's `touch`), with seeded adverse slippage.

Latency model (`latency_ms`): a group submitted at recorded time T executes when the
replay reaches T + latency_ms: the frames in between are replayed first, so both legs fill
against the books as they were then, and the pair stays busy meanwhile, as it does live.
Compensation orders of that group execute at once, on the same books. Each group runs at
its own due time, in submission order. The paper venues' own latency is off (it would
sleep in real time); their seeded faults stay as configured.

Deterministic: the same recordings, config and settings give the same ledger, event for
event (`tests/integration/test_replay_engine.py`). Nothing reads the wall clock: the ledger
is stamped by the replay clock, group ids derive from it, and the paper venues' ids carry
`replay` instead of a wall-clock run id.

The risk loop runs once per recorded second (breakers on quote age, outliers, balances,
pause expiry, groups held too long): a venue is up while its recorded quotes arrive.
Reconciliation is not replayed (it needs live venues).

With `study=True` (`--report`), every edge update, intent, reaction time and closed group
also feeds a `core.edge_study.EdgeStudy`, whose report goes under "study" (docs/replay.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.clock import ReplayClock
from core.compare import EdgeState
from core.config import QuantarbConfig
from core.edge_study import DirectionStudy, EdgeStudy, StudyReport, group_record
from core.hedge import HedgeGroup
from core.models import Decision, GroupState, Quote
from engine.runtime import Runtime
from engine.sources import build_feeds
from exchanges.paper import PaperGateway
from feeds.recording import MT5_FEED_PREFIX, RecordingError, read_frames, recording_files
from mt5_bridge.bridge import Mt5TickReplay

PROGRESS_EVERY = 65_536  # frames between progress callbacks
RISK_CHECK_NS = 1_000_000_000  # the risk loop's interval, in recorded time
# Funding is not in recordings (nor journaled, docs/ledger.md): a replay books no carry.
CARRY_NOTE = "no carry: funding and swap are not recorded, so a replay books none"
_COMPENSATED = (GroupState.REPAIRED, GroupState.UNWOUND, GroupState.FAILED)


class ReplayError(ValueError):
    """A replay that cannot run as asked (a ledger that exists, a bad setting)."""


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """What a replay adds to the config: order latency, slippage and the paper venues' seed."""

    latency_ms: float = 0.0
    slippage_bps: float | None = None  # None: the config's paper.slippage_bps
    seed: int | None = None  # None: the config's paper.seed

    def __post_init__(self) -> None:
        if not 0.0 <= self.latency_ms <= 60_000:
            raise ReplayError(f"latency must be within [0, 60000] ms, got {self.latency_ms}")
        if self.slippage_bps is not None and not 0.0 <= self.slippage_bps <= 1000:
            raise ReplayError(f"slippage must be within [0, 1000] bps, got {self.slippage_bps}")


def replay_config(config: QuantarbConfig, settings: ReplaySettings) -> QuantarbConfig:
    """`config` as a replay runs it: paper execution on simulated venues (nothing real is ever
    reached), paper latency off (the replay models it), slippage and seed as asked."""
    paper = config.paper.model_copy(update={
        "latency_ms_min": 0.0, "latency_ms_max": 0.0,
        "slippage_bps": config.paper.slippage_bps if settings.slippage_bps is None else settings.slippage_bps,
        "seed": config.paper.seed if settings.seed is None else settings.seed,
    })
    return config.model_copy(update={
        "engine": config.engine.model_copy(update={"execution": "paper"}),
        "demo": config.demo.model_copy(update={"enabled": True}),
        "paper": paper,
    })


@dataclass(slots=True)
class _Counts:
    frames: int = 0
    first_ns: int | None = None
    last_ns: int = 0


class EngineReplay:
    """One replay: build with the config and settings, `await run(paths)` once."""

    def __init__(self, config: QuantarbConfig, settings: ReplaySettings | None = None, *,
                 ledger_path: str | None = None, progress: Callable[[int], None] | None = None,
                 study: bool = False) -> None:
        self.settings = settings or ReplaySettings()
        if ledger_path is not None and Path(ledger_path).exists():
            # A replay never writes into a ledger that holds anything else (a live one above all).
            raise ReplayError(f"{ledger_path}: exists; a replay writes a new ledger")
        self.clock = ReplayClock()
        self.config = replay_config(config, self.settings)
        self.runtime = Runtime(self.config, is_demo=False, clock=self.clock, ledger_path=ledger_path or "",
                               mt5_in_process=True, serve_operator_api=False, warnings=())
        for gateway in self.runtime.gateways.values():
            if isinstance(gateway, PaperGateway):
                gateway.use_run_id("replay")
        self.ledger_path = ledger_path
        self._progress = progress
        self._latency_ns = round(self.settings.latency_ms * 1_000_000)
        self._due: deque[int] = deque()  # replay-clock ns at which submitted groups execute
        self._next_check_ns = 0  # the next pass of the risk loop, in recorded time
        self._delivered = self.runtime.health.delivered
        self.feeds = build_feeds(self.config, self._ingest, self.clock)
        self._handlers: dict[str, Callable[[str | bytes, int], object]] = {f.name: f.on_frame for f in self.feeds}
        mt5 = self.config.venues.mt5
        mt5_symbols = [key[1] for key in self.runtime.instruments if key[0] == "mt5"]
        self._mt5 = {t: Mt5TickReplay(t, mt5_symbols, self._ingest) for t in (mt5.terminals if mt5 else ())}
        for terminal, handler in self._mt5.items():
            self._handlers[MT5_FEED_PREFIX + terminal] = handler.on_frame
        self.by_feed: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        # The study (`--report`): every edge update, intent, reaction time and closed group.
        self.study: EdgeStudy | None = None
        if study:
            self.study = EdgeStudy(self.config.strategy.threshold_bps)
            self._compare = self.runtime.compare
            self._watched: dict[tuple[str, str], list[tuple[EdgeState, DirectionStudy]]] = {}
            orchestrator = self.runtime.orchestrator
            orchestrator.on_reaction(self._reaction)
            orchestrator.on_group_closed(self._closed)

    def _ingest(self, quote: Quote) -> Decision | None:
        self._delivered(quote.venue, quote.recv_ns)  # the venue's link is up: the breakers see it
        decision = self.runtime.ingest(quote)
        if self.study is not None and decision is not None:
            self._observe(quote, decision)
        if decision is not None and decision.intent is not None:
            self._due.append(self.clock.now_ns + self._latency_ns)
        return decision

    def _observe(self, quote: Quote, decision: Decision) -> None:
        """Feed the study with the edges this quote changed (an accepted quote recomputed
        every edge of its book; an outlier withdrew them), then the intent it made."""
        watched = self._watched.get((quote.venue, quote.symbol))
        if watched is None:
            watched = self._watch(quote)
        now_ns = self.clock.now_ns
        for edge, study in watched:
            buy = edge.buy
            sell = edge.sell
            if edge.valid and buy.has_quote and sell.has_quote:
                bid_qty = sell.bid_qty
                ask_qty = buy.ask_qty
                study.sample(edge.edge_bps, now_ns, ask_qty if ask_qty < bid_qty else bid_qty, buy.ask)
            else:
                study.end(now_ns)
        intent = decision.intent
        if intent is not None:
            assert self.study is not None
            self.study.intent((intent.pair, intent.buy.venue, intent.sell.venue))

    def _watch(self, quote: Quote) -> list[tuple[EdgeState, DirectionStudy]]:
        """The edges of the quote's book, each with its direction's study (once per book)."""
        assert self.study is not None
        book = self._compare.book(quote.venue, quote.symbol)
        watched = [] if book is None else [
            (edge, self.study.direction((edge.pair, edge.buy.venue, edge.sell.venue))) for edge in book.edges]
        self._watched[(quote.venue, quote.symbol)] = watched
        return watched

    def _reaction(self, group: HedgeGroup, reaction_ns: int) -> None:
        if self.study is not None:
            intent = group.intent
            self.study.reaction((intent.pair, intent.buy.venue, intent.sell.venue), reaction_ns)

    def _closed(self, group: HedgeGroup) -> None:
        if self.study is not None:
            self.study.group(group_record(group))

    def study_report(self) -> StudyReport:
        """The study of the replay so far (`run()` first; `--report`)."""
        if self.study is None:
            raise ReplayError("this replay was not asked to study the edges")
        return self.study.report(carry_note=CARRY_NOTE)

    async def _advance(self, until_ns: int | None) -> None:
        """What happens before `until_ns` (None: the groups still due, at the end), in recorded
        time order: the groups due (on the clock of the first one due) and the risk loop's
        once-a-second pass. Risk events are journaled before the replay moves on, so each is
        stamped with the recorded time it happened at."""
        due = self._due
        clock = self.clock
        runtime = self.runtime
        while True:
            group_ns = due[0] if due else None
            check_ns = self._next_check_ns if until_ns is not None else None
            if group_ns is not None and (check_ns is None or group_ns <= check_ns) and (
                    until_ns is None or group_ns <= until_ns):
                clock.now_ns = max(clock.now_ns, group_ns)
                due.popleft()  # one per group, in submission order (the latency is constant)
                await runtime.orchestrator.execute_next()
            elif check_ns is not None and until_ns is not None and check_ns <= until_ns:
                clock.now_ns = max(clock.now_ns, check_ns)
                runtime.risk_loop.check()
                self._next_check_ns = check_ns + RISK_CHECK_NS
            else:
                return
            await runtime.risk.drain()

    async def run(self, paths: Sequence[str | Path]) -> dict[str, Any]:
        if not paths:
            raise ReplayError("no recording to replay")
        files = recording_files(paths)  # directories expanded, rotated parts checked in order
        paths = [f.path for f in files]
        header = files[0].header
        if header is not None:
            self.clock.epoch_ms = header.wall_ms - header.mono_ns // 1_000_000
        runtime = self.runtime
        runtime.orchestrator.count_from(self.clock.time_ms())
        await runtime.open_ledger()
        counts = _Counts()
        try:
            for path in paths:
                await self._replay_file(Path(path), counts)
            await self._advance(None)
        finally:
            await runtime.close_ledger()
        report = self._report(paths, counts)
        if self.study is not None:
            report["study"] = self.study_report().as_dict()
        return report

    async def _replay_file(self, path: Path, counts: _Counts) -> None:
        """Every frame of one file, in order, each on its (shifted) recorded time. The loop runs
        once per frame: what it keeps across frames lives in locals, written back at the end."""
        clock = self.clock
        handlers = self._handlers
        by_feed = self.by_feed
        skipped = self.skipped
        due = self._due
        shift: int | None = None  # a file that starts before the last one ended follows it
        progress = self._progress
        started = counts.first_ns is not None
        frames = counts.frames
        last_ns = counts.last_ns
        next_check_ns = self._next_check_ns
        try:
            for feed, recorded_ns, frame in read_frames(path):
                handler = handlers.get(feed)
                if handler is None:
                    skipped[feed] = skipped.get(feed, 0) + 1
                    continue
                if shift is None:
                    shift = last_ns - recorded_ns + 1 if frames and recorded_ns <= last_ns else 0
                recv_ns = recorded_ns + shift
                if recv_ns < last_ns:  # noqa: PLR1730 (max() is a call per frame)
                    recv_ns = last_ns  # never backwards: ages and cooldowns need it
                if not started:
                    clock.now_ns = recv_ns
                    self.runtime.risk_monitor.restart()  # the recording's start: nothing was down before
                    next_check_ns = self._next_check_ns = recv_ns + RISK_CHECK_NS
                    counts.first_ns = recv_ns
                    started = True
                elif recv_ns >= next_check_ns or (due and due[0] <= recv_ns):
                    await self._advance(recv_ns)
                    next_check_ns = self._next_check_ns
                clock.now_ns = recv_ns
                handler(frame, recv_ns)
                by_feed[feed] = by_feed.get(feed, 0) + 1
                last_ns = recv_ns
                frames += 1
                if progress is not None and frames % PROGRESS_EVERY == 0:
                    counts.frames = frames
                    progress(frames)
        except (OSError, EOFError) as exc:
            raise RecordingError(f"{path}: cannot read: {exc}") from None
        finally:
            counts.frames = frames
            counts.last_ns = last_ns

    def _report(self, paths: Sequence[str | Path], counts: _Counts) -> dict[str, Any]:
        runtime = self.runtime
        pipeline = runtime.pipeline
        orchestrator = runtime.orchestrator
        by_state = {str(k): v for k, v in sorted(orchestrator.closed_by_state.items())}
        pairs: dict[str, Any] = {}
        for name, summary in sorted(orchestrator.stats().items()):
            pairs[name] = {
                "decisions": summary.decisions, "intents": summary.intents,
                "trigger_rate": round(summary.trigger_rate, 6),
                "groups": summary.groups, "hits": summary.hits, "hit_rate": round(summary.hit_rate, 6),
                "pnl": str(summary.total_pnl),
                "mean_slippage_bps": (None if summary.mean_slippage_bps is None
                                      else round(summary.mean_slippage_bps, 4)),
                "edge_bps": summary.edge_percentiles(),
            }
        span = (counts.last_ns - counts.first_ns) / 1e9 if counts.first_ns is not None else 0.0
        return {
            "files": [str(p) for p in paths],
            "frames": counts.frames,
            "span_s": round(span, 3),
            "by_feed": dict(sorted(self.by_feed.items())),
            "skipped_feeds": dict(sorted(self.skipped.items())),
            "quotes": pipeline.quotes,
            "decisions": pipeline.decisions,
            "intents": pipeline.intents,
            "reasons": {str(k): v for k, v in pipeline.reasons.most_common()},
            "dropped": {f.name: dict(f.dropped()) for f in self.feeds},
            "mt5_rejected": {t: h.rejected for t, h in self._mt5.items() if h.rejected},
            "groups": sum(by_state.values()),
            "groups_by_state": by_state,
            "compensated": sum(by_state.get(str(s), 0) for s in _COMPENSATED),
            "open_groups": len(orchestrator.open),
            "realized_pnl": str(orchestrator.realized_pnl),
            "trading_state": str(runtime.gate.state),
            "pairs": pairs,
            "settings": {"latency_ms": self.settings.latency_ms,
                         "slippage_bps": self.config.paper.slippage_bps, "seed": self.config.paper.seed},
            "ledger": self.ledger_path,
        }


async def replay_engine(config: QuantarbConfig, paths: Sequence[str | Path], settings: ReplaySettings | None = None,
                        *, ledger_path: str | None = None, progress: Callable[[int], None] | None = None,
                        study: bool = False) -> dict[str, Any]:
    """Replay `paths` (in order) through the whole engine; returns a JSON-able report (with
    `study`, its EdgeStudy under "study": `core.edge_study.StudyReport.as_dict`)."""
    return await EngineReplay(config, settings, ledger_path=ledger_path, progress=progress,
                              study=study).run(paths)


__all__ = ["MT5_FEED_PREFIX", "EngineReplay", "ReplayError", "ReplaySettings", "replay_config", "replay_engine"]
