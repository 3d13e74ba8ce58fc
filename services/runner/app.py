"""The runner service: gRPC (runner.proto) over the process fleet; the work is in fleet.py and process.py."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from services.node.config import NodeConfig
from services.node.grpc_link import run_until_signalled, start_server
from services.proto.meshllm.runner.v1 import runner_pb2, runner_pb2_grpc
from services.runner import launch
from services.runner.binaries import LlamaNotBuilt, find_llama_bin_dir
from services.runner.fleet import ProcessFleet
from services.runner.pidfile import PidRegistry
from services.runner.spec import InvalidSpec, ProcessStatus, specs_from_proto

log = logging.getLogger("runner.app")
SERVICE_NAME = "runner"


def status_message(generation: int, statuses: list[ProcessStatus]) -> runner_pb2.RunnerStatus:
    return runner_pb2.RunnerStatus(generation=generation, processes=[s.to_proto() for s in statuses])


class RunnerServicer(runner_pb2_grpc.RunnerServicer):
    def __init__(self, fleet: ProcessFleet) -> None:
        self._fleet = fleet

    async def Apply(
        self, request: runner_pb2.ApplyRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.RunnerStatus:
        try:
            desired = specs_from_proto(request.processes)
        except InvalidSpec as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._fleet.apply(desired)
        return status_message(*self._fleet.snapshot())

    async def GetStatus(
        self, request: runner_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.RunnerStatus:
        return status_message(*self._fleet.snapshot())

    async def Watch(
        self, request: runner_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runner_pb2.RunnerStatus]:
        async for generation, statuses in self._fleet.watch():
            yield status_message(generation, statuses)


def _bin_dir_finder(cfg: NodeConfig) -> Callable[[], Path]:
    # Cached once found; a failure is not cached, so `make llama` while the node runs is picked up.
    return functools.cache(lambda: find_llama_bin_dir(cfg.llama_bin_dir))


async def _stop_children_on_exit(fleet: ProcessFleet) -> None:
    """Idles until cancelled (SIGTERM/SIGINT), then stops every child before the runner exits."""
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.stop_all()


async def run(cfg: NodeConfig) -> None:
    home = cfg.node_home
    home.ensure()
    launch.reserve_ports({cfg.api_port, cfg.console_port})
    pids = PidRegistry(home.runner_pids)
    await asyncio.to_thread(pids.reap_leftovers)
    find_bin_dir = _bin_dir_finder(cfg)
    try:
        log.debug("llama.cpp binaries in %s", await asyncio.to_thread(find_bin_dir))
    except LlamaNotBuilt as exc:
        log.warning("%s", exc)
    fleet = ProcessFleet(find_bin_dir, home.logs, pids)
    servicer = RunnerServicer(fleet)
    server = await start_server(
        home, SERVICE_NAME, lambda s: runner_pb2_grpc.add_RunnerServicer_to_server(servicer, s)
    )
    log.info("runner listening on %s", home.socket(SERVICE_NAME))
    try:
        await run_until_signalled(server, _stop_children_on_exit(fleet))
    finally:
        pids.kill_all_now()
