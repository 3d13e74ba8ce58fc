"""One supervised llama.cpp process: start, wait for health, restart with backoff, stop without orphans."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from services.node.devices import is_cpu_only
from services.runner import commands, failure, gguf_meta, health, launch
from services.runner.backoff import RestartBackoff
from services.runner.binaries import LlamaNotBuilt, has_offload_device
from services.runner.context_size import prompt_cache_mib
from services.runner.cpu_cores import physical_cores
from services.runner.pidfile import PidRegistry, kill_group
from services.runner.process_log import ProcessLog
from services.runner.slots import choose_layout
from services.runner.spec import ModelKind, ProcessKind, ProcessSpec, ProcessState, ProcessStatus
from services.runner.speculation import Speculation, SpeculationError
from services.runner.speculation_pairing import checked_speculation

log = logging.getLogger("runner.process")

STOP_GRACE_S = 5.0
KILL_WAIT_S = 5.0
API_KEY_BYTES = 32  # of randomness in each llama-server's key
CORES = physical_cores()  # read once: the topology does not change while the runner lives


class LaunchError(Exception):
    """Starting cannot succeed until something changes (missing model file or binaries): no retry."""


class SupervisedProcess:
    """Owns one lifecycle task; `status` is always current and `on_change` fires on every update."""

    def __init__(
        self,
        spec: ProcessSpec,
        find_bin_dir: Callable[[], Path],
        log_dir: Path,
        pids: PidRegistry,
        on_change: Callable[[], None],
    ) -> None:
        self.spec = spec
        self._find_bin_dir = find_bin_dir
        kind_name = spec.kind.name.lower().replace("_", "-")  # llama-server, rpc-server
        self._log = ProcessLog(launch.log_path_for(log_dir, spec.key), spec.key, kind_name, spec.model)
        self._pids = pids
        self._on_change = on_change
        # llama-server answers only requests that carry this (the gateway gets it with the status).
        api_key = secrets.token_urlsafe(API_KEY_BYTES) if spec.kind is ProcessKind.LLAMA_SERVER else ""
        self._status = ProcessStatus(
            spec=spec, state=ProcessState.STARTING, state_since_unix_s=time.time(), api_key=api_key
        )
        self._backoff = RestartBackoff(give_up=not spec.rpc_endpoints)
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._traits: gguf_meta.ModelTraits | None = None
        self._prompt_cache_mib = 0  # the running llama-server's --cache-ram

    @property
    def status(self) -> ProcessStatus:
        return self._status

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"supervise {self.spec.key}")

    async def stop(self) -> None:
        """Cancel supervision, then SIGTERM the process group, SIGKILL it after STOP_GRACE_S."""
        self._set(state=ProcessState.STOPPING)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._terminate()
        log.info("stopped %s", self.spec.key)

    def _set(self, **changes: object) -> None:
        if "state" in changes and changes["state"] != self._status.state:
            changes["state_since_unix_s"] = time.time()
        self._status = replace(self._status, **changes)  # type: ignore[arg-type]
        self._on_change()

    async def _supervise(self) -> None:
        try:
            while True:
                healthy_for_s, killed_from_outside = await self._run_once()
                delay_s = self._backoff.on_exit(healthy_for_s, killed_from_outside)
                if delay_s is None:
                    log.warning("giving up on %s: %s", self.spec.key, self._status.last_error)
                    self._set(state=ProcessState.FAILED, pid=0)
                    return
                error = self._status.last_error
                log.info("%s died (%s); restarting in %.1f s", self.spec.key, error, delay_s)
                self._set(state=ProcessState.BACKOFF, pid=0)
                await asyncio.sleep(delay_s)
                self._set(restarts=self._status.restarts + 1)
        except LaunchError as exc:
            log.warning("cannot start %s: %s", self.spec.key, exc)
            self._set(state=ProcessState.FAILED, pid=0, last_error=str(exc))
        except OSError as exc:  # no free port, log dir unwritable: report it rather than die silently
            log.exception("supervising %s failed", self.spec.key)
            self._set(state=ProcessState.FAILED, pid=0, last_error=f"runner error: {exc}")

    async def _model_traits(self) -> gguf_meta.ModelTraits | None:
        """Read once per process; an unreadable header is left for llama-server to report in its log."""
        if self._traits is None and self.spec.kind is ProcessKind.LLAMA_SERVER:
            try:
                path = Path(self.spec.model_path)
                self._traits = await asyncio.to_thread(gguf_meta.read_model_traits, path)
            except (OSError, ValueError) as exc:
                log.debug("%s: cannot read GGUF header: %s", self.spec.key, exc)
        return self._traits

    def _check_launchable(self) -> Path:
        """The bin dir, once the files a start needs are known to exist. Blocking: run in a thread
        (until the binaries are found, this runs build.py --print-dir)."""
        if self.spec.kind is ProcessKind.LLAMA_SERVER and not Path(self.spec.model_path).is_file():
            raise LaunchError(f"model file {self.spec.model_path} does not exist")
        if self.spec.draft_model_path and not Path(self.spec.draft_model_path).is_file():
            raise LaunchError(f"draft model file {self.spec.draft_model_path} does not exist")
        try:
            return self._find_bin_dir()
        except LlamaNotBuilt as exc:
            raise LaunchError(str(exc)) from exc

    def respec_in_place(self, spec: ProcessSpec) -> bool:
        """Take `spec` without a restart if it differs only in memory_budget_bytes, leaves the
        context as it is and leaves at least the prompt cache it runs with (placement re-splits a
        node's memory whenever a model comes or goes; a restart would drop every request in flight
        for nothing). False: restart it (a cache bigger than the new budget allows could take memory
        placement now gives another model)."""
        same_otherwise = replace(spec, memory_budget_bytes=self.spec.memory_budget_bytes) == self.spec
        if not same_otherwise or self._traits is None:
            return False
        layout = choose_layout(self._traits, spec.context_size, spec.parallel_slots, spec.memory_budget_bytes)
        if (layout.context_tokens, layout.slots) != (self._status.context_tokens, self._status.slots):
            return False
        if self._prompt_cache_mib > self._cache_mib_for(spec, layout.context_tokens):
            return False
        self.spec = spec
        self._set(spec=spec)
        return True

    def _note_model(self, traits: gguf_meta.ModelTraits | None) -> None:
        """What the model is and the context it gets, in the status, before the process starts."""
        if self.spec.kind is not ProcessKind.LLAMA_SERVER:
            return
        known = traits or gguf_meta.ModelTraits()
        layout = choose_layout(
            known, self.spec.context_size, self.spec.parallel_slots, self.spec.memory_budget_bytes
        )
        context = layout.context_tokens
        trained = known.trained_context_tokens
        if self.spec.context_size and trained and self.spec.context_size > trained:
            # The pinned llama-server caps each slot at the trained context (n_ctx_slot()); a bigger
            # unified cache still lets its parallel slots each use that much at once.
            log.warning(
                "%s: --ctx-size %d exceeds the %d tokens the model was trained on: one request still "
                "gets at most %d, the rest of the cache serves requests in parallel",
                self.spec.key,
                self.spec.context_size,
                trained,
                trained,
            )
        self._set(
            model_kind=traits.kind if traits else None,
            context_tokens=context,
            trained_context_tokens=trained,
            slots=layout.slots,
        )

    def _cache_mib_for(self, spec: ProcessSpec, context: int) -> int:
        """The --cache-ram commands.llama_server_argv gives `spec` (0: no prompt cache)."""
        if spec.kind is not ProcessKind.LLAMA_SERVER or spec.rpc_endpoints:
            return 0
        traits = self._traits or gguf_meta.ModelTraits()
        slots = choose_layout(traits, spec.context_size, spec.parallel_slots, spec.memory_budget_bytes).slots
        return prompt_cache_mib(traits, context, spec.memory_budget_bytes, slots)

    async def _argv(self, port: int) -> list[str]:
        bin_dir = await asyncio.to_thread(self._check_launchable)
        traits = await self._model_traits()
        if self._status.context_tokens == 0:
            self._note_model(traits)
        self._prompt_cache_mib = self._cache_mib_for(self.spec, self._status.context_tokens)
        # Only a split host's argv depends on a local GPU (speculation no longer does).
        local_gpu = (
            bool(self.spec.rpc_endpoints)
            and not is_cpu_only(self.spec.device)
            and await asyncio.to_thread(has_offload_device, bin_dir)
        )
        speculation = await self._speculation(traits)
        return commands.build_argv(self.spec, bin_dir, port, CORES, traits, local_gpu, speculation)

    async def _speculation(self, traits: gguf_meta.ModelTraits | None) -> Speculation | None:
        """Decided at every start, the draft's vocabulary and size checked against the model's
        (cached per file): an auto-paired draft that cannot serve is dropped, with the reason."""
        if self.spec.kind is not ProcessKind.LLAMA_SERVER:
            return None
        if traits is not None and traits.kind is not ModelKind.CHAT:
            chosen = Speculation(reason="not a generating model")
        else:
            spec = self.spec
            try:
                chosen = await checked_speculation(spec.speculation, spec.model_path, spec.draft_model_path)
            except SpeculationError as exc:
                raise LaunchError(str(exc)) from exc
        if chosen.reason != self._status.speculation_reason:
            log.info("%s: speculation %s (%s)", self.spec.key, chosen.summary, chosen.reason)
        self._set(
            speculation=chosen.summary,
            draft_model_path=chosen.draft_model_path,
            speculation_reason=chosen.reason,
        )
        return chosen

    async def _run_once(self) -> tuple[float, bool]:
        """Spawn, wait for health, wait for exit. Returns how long it was READY (0 if never) and
        whether it was killed from outside (failure.killed_from_outside; our own kill of a process
        that never became healthy is its failure)."""
        port = launch.pick_port(self._status.port)
        argv = await self._argv(port)
        self._log.open_run(argv)
        try:
            env = {launch.LLAMA_API_KEY_ENV: self._status.api_key} if self._status.api_key else {}
            self._proc = await launch.spawn(argv, env)
        except OSError as exc:
            raise LaunchError(f"cannot execute {argv[0]}: {exc}") from exc
        proc = self._proc
        assert proc.stdout is not None  # spawn gives it a pipe
        self._log.start_pump(proc.stdout)
        self._pids.add(proc.pid)
        self._set(state=ProcessState.STARTING, port=port, pid=proc.pid)
        log.debug("started %s pid=%d port=%d", self.spec.key, proc.pid, port)
        ready_at, hung = await self._wait_ready_or_exit(proc, port)
        await proc.wait()
        healthy_for_s = time.monotonic() - ready_at if ready_at is not None else 0.0
        self._forget(proc)
        await self._log.finish()
        if hung:
            self._set(last_error=f"{hung}; killed")
            return healthy_for_s, False
        tail = self._log.tail()
        self._set(last_error=failure.summarize_exit(proc.returncode, tail))
        return healthy_for_s, failure.killed_from_outside(proc.returncode)

    async def _wait_ready_or_exit(
        self, proc: asyncio.subprocess.Process, port: int
    ) -> tuple[float | None, str]:
        """Monotonic time it became READY, or None if it exited (or was killed) before that; and why
        it was killed here when it did not become healthy in time ('' otherwise)."""
        ready = asyncio.create_task(health.wait_until_ready(self.spec.kind, port))
        exited = asyncio.create_task(proc.wait())
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, exited):
                task.cancel()
            await asyncio.gather(ready, exited, return_exceptions=True)
        if ready.cancelled():  # it exited first
            return None, ""
        not_ready = ready.exception()
        if not_ready is not None:  # the health deadline passed: a hung load counts as a failure
            log.warning("%s: %s; killing it", self.spec.key, not_ready)
            kill_group(proc.pid, signal.SIGKILL)
            return None, str(not_ready)
        log.info("%s ready on port %d", self.spec.key, port)
        # last_error stays: after a restart it says why the previous run died.
        self._set(state=ProcessState.READY)
        return time.monotonic(), ""

    def _forget(self, proc: asyncio.subprocess.Process) -> None:
        # Anything the leader left behind in its group goes with it: no orphans.
        kill_group(proc.pid, signal.SIGKILL)
        self._pids.discard(proc.pid)
        self._proc = None

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            kill_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", self.spec.key, STOP_GRACE_S)
                kill_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), KILL_WAIT_S)
        self._forget(proc)
        await self._log.finish()
