"""The container engine of a job that runs on the host: its services (2.6, host mode) and
its docker actions and ``docker://`` steps (3.10).

:class:`HostEngine` connects to the engine when first asked: at set-up when the job has
services, else on the job's first container step. Which steps run in containers is only
known once they run (a local action's metadata comes with the checkout, a remote one's
with the fetch, a composite's steps with both), so a job that never runs one never
touches the engine. The connection and every container are released by :meth:`aclose`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import trio

from trio_runner.backends.base import ContainerStep, OutputHandler
from trio_runner.errors import RunnerError

if TYPE_CHECKING:
    from trio_runner.backends.docker import DockerEnvironment
    from trio_runner.backends.docker_api import DockerClient

#: How long the engine gets to answer before a host job goes on without it.
ENGINE_PROBE_TIMEOUT = 2.0


class NoEngine(RunnerError):
    """No container engine answered; ``reason`` says where it was looked for."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"no container engine answered: {reason}")
        self.reason = reason


#: Sets the job's containers up with a connected client (``DockerEnvironment.start_for_host``).
Starter = Callable[["DockerClient"], contextlib.AbstractAsyncContextManager["DockerEnvironment"]]


class HostEngine:
    """Opens the job's :class:`DockerEnvironment` (host mode) once, on first use.

    ``docker_host`` is ``container.docker_host``; ``start`` is called once the engine
    answers, so that a job without containers never loads the container modules.
    """

    def __init__(self, docker_host: str, start: Starter) -> None:
        self._docker_host = docker_host
        self._start = start
        self._stack = contextlib.AsyncExitStack()
        self._lock = trio.Lock()
        self._docker: DockerEnvironment | None = None
        #: Why the engine did not answer: asked once per job, so later container steps
        #: fail at once instead of each waiting out the probe again.
        self._missing: NoEngine | None = None

    async def open(self) -> DockerEnvironment:
        """The job's containers' environment, connected and set up on the first call.

        Raises NoEngine when no engine answers within ENGINE_PROBE_TIMEOUT (then on every
        later call too), EngineError when the engine fails the set-up.
        """
        async with self._lock:
            if self._missing is not None:
                raise NoEngine(self._missing.reason)
            if self._docker is None:
                try:
                    self._docker = await self._stack.enter_async_context(self._opened())
                except NoEngine as exc:
                    self._missing = exc
                    raise
            return self._docker

    @contextlib.asynccontextmanager
    async def _opened(self) -> AsyncIterator[DockerEnvironment]:
        from trio_runner.backends import docker_api

        async with contextlib.AsyncExitStack() as stack:
            api = None
            try:
                address = docker_api.resolve_docker_host(self._docker_host)
                with trio.move_on_after(ENGINE_PROBE_TIMEOUT):
                    api = await stack.enter_async_context(docker_api.connect(address))
            except docker_api.EngineError as exc:
                raise NoEngine(str(exc)) from None
            if api is None:
                raise NoEngine(f"{address} did not answer within {ENGINE_PROBE_TIMEOUT:g} s")
            yield await stack.enter_async_context(self._start(api))

    async def run_container_step(self, step: ContainerStep, *, output: OutputHandler) -> int:
        """The ContainerSteps protocol, through the engine (connected on first use)."""
        docker = await self.open()
        return await docker.run_container_step(step, output=output)

    async def kill(self) -> None:
        """Kill the job's containers (steps and services) at once, when there are any."""
        if self._docker is not None:
            await self._docker.kill()

    async def aclose(self) -> None:
        """Remove every container of the job (shielded, bounded) and disconnect."""
        await self._stack.aclose()
        self._docker = None
