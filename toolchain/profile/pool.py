"""A pool of `edgec agent` s on copies of one device, and measurements spread over them.

Why: a search measures the top candidates of every budget; through one agent they queue one after
another. With several boards of the device, each running an agent, they are measured at once: one
worker thread per agent, each sending one bundle at a time (an agent measures one thing at a time,
so its timings stay clean) and taking the next as soon as its agent is free. The bundles are made
on this machine, one at a time, by whoever hands them over (:meth:`AgentPool.measure_all` takes an
iterable, so the next candidate is exported while the agents measure the previous ones).

When an agent fails:

- it cannot be reached or the connection breaks (refused, closed, timed out, a TLS failure), or
  it answers as an agent that cannot serve this build (401/403: the token refused; 408: the upload
  did not arrive in time; 503: busy with other clients): the agent is set aside for the rest of the
  build (a warning names it and why) and the bundle goes to another agent. Only when every agent
  of the pool is down does the measurement fail, with each agent and why.
- it refuses the bundle or the request itself (400 malformed, 413 over the agent's upload or
  unpacking limits, 422 a bundle that fails verification or is not signed by a trusted key) or the
  measurement fails on the device (500): that is the candidate's own fault. The agents of one
  pool are set up alike (same limits, same trusted keys), so another would answer the same: it is
  not retried elsewhere, the measurement fails at once with the agent's answer, and the agent
  keeps its place in the pool.

Every report says which agent produced it (``report["agent"]``, the URL).

Example::

    pool = AgentPool([Agent("http://orin-1:9600", token, "tok"), Agent("http://orin-2:9600", ...)])
    reports = pool.measure_all((bundle, {"shapes": [[1, 128]]}) for bundle in bundles)
    [r["agent"] for r in reports]     # which agent measured each
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.profile.agent import AgentRefused, AgentUnreachable, profile_remote
from toolchain.profile.runners import ProfileError

log = logging.getLogger(__name__)

# answers that say the agent cannot serve this build, whatever is sent: the agent is set aside
AGENT_SIDE_STATUS = {
    401: "refused the token",
    403: "refused the token",
    408: "the upload did not arrive in time",
    503: "busy: its connections are all taken",
}


@dataclass(frozen=True)
class Agent:
    """An `edgec agent` on the device: its URL and token (read once from ``token_file``), and
    for an https:// agent the certificate to trust (None: the system's trust store)."""

    url: str
    token: str = field(repr=False)
    token_file: str
    ca_file: str | None = None


class AgentPool:
    """Agents of one device, and which of them are down for the rest of the build.

    Attributes:
        agents: every agent given, in order (the first is the one a single-agent caller names).
    """

    def __init__(self, agents: Sequence[Agent]):
        if not agents:
            raise ProfileError("a pool needs at least one agent")
        self.agents = tuple(agents)
        self._down: dict[str, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AgentPool({[a.url for a in self.agents]}, down={sorted(self._down)})"

    def __getstate__(self) -> dict:  # a lock does not pickle
        return {"agents": self.agents, "_down": dict(self._down)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def down(self) -> dict[str, str]:
        """URL -> why, for each agent set aside."""
        with self._lock:
            return dict(self._down)

    def live(self) -> list[Agent]:
        with self._lock:
            return [a for a in self.agents if a.url not in self._down]

    def mark_down(self, agent: Agent, reason: str) -> None:
        """Set ``agent`` aside for the rest of the build (logged once)."""
        with self._lock:
            if agent.url in self._down:
                return
            self._down[agent.url] = reason
            left = len(self.agents) - len(self._down)
        log.warning("the agent at %s is down (%s): no more measurements go to it in this build; "
                    "%d agent(s) of the pool left", agent.url, reason, left)  # fmt: skip

    def measure(self, bundle: Path, request: dict) -> dict:
        """One bundle measured by a live agent (another when that one fails)."""
        return self.measure_all([(bundle, request)])[0]

    def measure_all(self, jobs: Iterable[tuple[Path, dict]]) -> list[dict]:
        """Every ``(bundle, request)`` of ``jobs`` measured by the pool's live agents at once, one
        at a time per agent; the reports in the order of ``jobs``, each with ``agent``.

        ``jobs`` is read here, one item at a time, while the agents measure: a generator that
        exports each bundle overlaps the export of one with the measurement of others.

        Raises:
            ProfileError: a bundle the agent refused (the candidate's own fault, see the module
                docstring), or every agent down (each named with its reason).
        """
        live = self.live()
        if not live:
            raise self._all_down()
        batch = _Batch(workers=len(live))
        threads = [
            threading.Thread(
                target=self._work, args=(a, batch), name=f"edgec-pool-{i}", daemon=True
            )
            for i, a in enumerate(live)
        ]
        for t in threads:
            t.start()
        try:
            for job in jobs:
                with batch.cond:
                    if batch.failed or batch.workers == 0:
                        break
                    batch.pending.append((batch.count, job))
                    batch.count += 1
                    batch.cond.notify()
        except BaseException:  # an export failed, or Ctrl-C: the workers stop after their
            with batch.cond:  # measurement in flight, not waited for (daemon threads)
                batch.stop = batch.produced = True
                batch.cond.notify_all()
            raise
        with batch.cond:
            batch.produced = True
            batch.cond.notify_all()
        for t in threads:
            t.join()
        if batch.failed:
            raise batch.failed[0][1]
        if len(batch.results) < batch.count:  # an agent goes down holding a bundle: given back
            raise self._all_down()
        return [batch.results[i] for i in range(batch.count)]

    # -- one worker per agent -------------------------------------------------------------------
    def _work(self, agent: Agent, batch: _Batch) -> None:
        while (item := batch.take()) is not None:
            index, (bundle, request) = item
            try:
                report = profile_remote(bundle, agent.url, token=agent.token, request=request,
                                        ca_file=agent.ca_file)  # fmt: skip
            except ProfileError as e:
                reason = _agent_side(e)
                if reason is None:  # the candidate's own fault: the batch fails with it
                    batch.fail(index, e)
                    continue
                self.mark_down(agent, reason)
                batch.give_back(item)
                return
            except BaseException as e:  # a bug here must not leave the batch waiting
                batch.fail(index, e)
                continue
            batch.done(index, {**report, "agent": agent.url})
        batch.leave()

    def _all_down(self) -> ProfileError:
        down = self.down
        lines = "\n".join(f"  {a.url}: {down.get(a.url, 'not tried')}" for a in self.agents)
        return ProfileError(
            f"every agent of the pool failed, nothing more can be measured:\n{lines}\n"
            "start the agents again (`edgec agent` on each board) or give others (--target, "
            "--pool), then re-run: finished stages are kept"
        )


def _agent_side(error: ProfileError) -> str | None:
    """Why the agent cannot serve this build, or None where the failure is the candidate's."""
    if isinstance(error, AgentUnreachable):
        return error.reason
    if isinstance(error, AgentRefused) and error.status in AGENT_SIDE_STATUS:
        return f"{error.status}: {AGENT_SIDE_STATUS[error.status]}"
    return None


class _Batch:
    """The shared state of one :meth:`AgentPool.measure_all`: the bundles waiting, those being
    measured, the results; guarded by ``cond``."""

    def __init__(self, workers: int):
        self.cond = threading.Condition()
        self.pending: deque = deque()
        self.results: dict[int, dict] = {}
        self.failed: list[tuple[int, BaseException]] = []
        self.count = self.in_flight = 0
        self.workers = workers
        self.produced = self.stop = False

    def take(self):
        """The next bundle to measure, or None when there is nothing more for this worker. It
        waits while bundles may still come: from the producer, or back from a failed agent."""
        with self.cond:
            while not (self.stop or self.failed or self.pending):
                if self.produced and self.in_flight == 0:
                    return None
                self.cond.wait()
            if self.stop or self.failed:
                return None
            self.in_flight += 1
            return self.pending.popleft()

    def done(self, index: int, report: dict) -> None:
        with self.cond:
            self.results[index] = report
            self.in_flight -= 1
            self.cond.notify_all()

    def fail(self, index: int, error: BaseException) -> None:
        with self.cond:
            self.failed.append((index, error))
            self.failed.sort(key=lambda f: f[0])
            self.in_flight -= 1
            self.cond.notify_all()

    def give_back(self, item) -> None:
        """A bundle whose agent went down, first in line for another agent; that worker ends."""
        with self.cond:
            self.pending.appendleft(item)
            self.in_flight -= 1
            self.workers -= 1
            self.cond.notify_all()

    def leave(self) -> None:
        with self.cond:
            self.workers -= 1
            self.cond.notify_all()


__all__ = ["AGENT_SIDE_STATUS", "Agent", "AgentPool"]
