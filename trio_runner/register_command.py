"""``trio-runner register``: turn a registration token into a runner identity.

Like act_runner's ``register``: asks for the instance URL, the token, a name and labels
(or takes them from options and the environment with ``--no-interactive``), pings the
instance until it answers, calls Register once, and writes the registration file. The
lock on the registration file is held throughout, so a running daemon's identity is
never overwritten.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol

import msgspec
import trio

from trio_runner import __version__
from trio_runner.config import Config, Secret, env_overrides, load_config
from trio_runner.errors import ConfigError, RunnerError
from trio_runner.gitea.client import RunnerClient, api_base_url
from trio_runner.gitea.connect import ConnectError
from trio_runner.gitea.messages import PingResponse, RegisterRequest, RegisterResponse
from trio_runner.labels import (
    DEFAULT_LABELS,
    Label,
    label_names,
    label_strings,
    parse_labels,
    split_labels,
)
from trio_runner.registration import Registration, hold_registration_lock, save_registration

#: Ping attempts (one a second) before ``--no-interactive`` gives up.
NONINTERACTIVE_PING_ATTEMPTS: Final = 30
CAPABILITIES: Final = ("cancelling",)
_LABEL_EXAMPLE: Final = "ubuntu-latest:docker://docker.gitea.com/runner-images:ubuntu-latest"


class RegisterInputs(msgspec.Struct, kw_only=True):
    instance: str
    token: str
    name: str
    labels: list[Label]
    ephemeral: bool = False


class RegisterClient(Protocol):
    async def ping(self, data: str) -> PingResponse: ...

    async def register(self, request: RegisterRequest) -> RegisterResponse: ...


class RegisterClientContext(Protocol):
    async def __aenter__(self) -> RegisterClient: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


#: Makes the client for (address, insecure); tests substitute their own.
ClientFactory = Callable[[str, bool], RegisterClientContext]


def _runner_client(address: str, insecure: bool) -> RegisterClientContext:
    return RunnerClient(address, insecure=insecure)


class RegistrationFailed(RunnerError):
    """Gitea refused the registration, or its answer was lost."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file")
    parser.add_argument(
        "--no-interactive", action="store_true", help="take every input from options"
    )
    parser.add_argument("--instance", default="", help="Gitea instance address")
    parser.add_argument(
        "--token", default="", help="registration token (or GITEA_RUNNER_REGISTRATION_TOKEN)"
    )
    parser.add_argument("--token-file", default="", help="file holding the registration token")
    parser.add_argument("--name", default="", help="runner name (default: the host name)")
    parser.add_argument("--labels", default="", help="runner labels, comma-separated")
    parser.add_argument(
        "--ephemeral",
        action="store_true",
        help="register a runner that takes a single job (stricter than daemon --once)",
    )


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    registration_file = Path(config.runner.file)
    with hold_registration_lock(registration_file):
        if args.no_interactive:
            inputs = inputs_from_options(args, config)
            attempts: int | None = NONINTERACTIVE_PING_ATTEMPTS
        else:
            if registration_file.exists() and not _confirm_overwrite():
                return 0
            inputs = ask_inputs(args, config, _ask)
            attempts = None
        print(
            f"Registering runner, name={inputs.name}, instance={inputs.instance}, "
            f"labels={label_strings(inputs.labels)}."
        )
        registration = trio.run(
            partial(
                register_runner, inputs, insecure=config.runner.insecure, ping_attempts=attempts
            )
        )
        save_registration(registration_file, registration)
    print("Runner registered successfully.")
    return 0


def _given_token(args: argparse.Namespace) -> str:
    """``--token``, else ``--token-file``, else the environment; "" when none."""
    if args.token and args.token_file:
        raise ConfigError("give either --token or --token-file, not both")
    if args.token:
        return str(args.token).strip()
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"cannot read the token file {args.token_file}") from None
    return env_overrides().registration_token


def _given_labels(args: argparse.Namespace, config: Config) -> list[str]:
    """``--labels`` (or ``GITEA_RUNNER_LABELS``), else ``runner.labels``; [] when none."""
    return split_labels(args.labels) or list(env_overrides().labels) or list(config.runner.labels)


def _check_instance(instance: str) -> str:
    if not instance:
        raise ConfigError("no instance address (--instance or GITEA_INSTANCE_URL)")
    api_base_url(instance)
    return instance


def inputs_from_options(args: argparse.Namespace, config: Config) -> RegisterInputs:
    """The inputs of ``--no-interactive``: options, then environment, then defaults."""
    env = env_overrides()
    token = _given_token(args)
    if not token:
        raise ConfigError(
            "no registration token (--token, --token-file or GITEA_RUNNER_REGISTRATION_TOKEN)"
        )
    texts = _given_labels(args, config) or list(DEFAULT_LABELS)
    return RegisterInputs(
        instance=_check_instance(args.instance or env.instance_url),
        token=Secret(token),
        name=args.name or env.runner_name or socket.gethostname(),
        labels=parse_labels(texts),
        ephemeral=args.ephemeral or env.ephemeral,
    )


Ask = Callable[[str, bool], str]


def _ask(question: str, secret: bool) -> str:
    if secret and sys.stdin.isatty():
        return getpass.getpass(question + " ")
    print(question)
    line = sys.stdin.readline()
    if not line:
        raise ConfigError("input ended before registration was complete")
    return line.strip()


def _confirm_overwrite() -> bool:
    answer = _ask("Runner is already registered, overwrite local config? [y/N]", False)
    return answer.strip().lower() in ("y", "yes")


def ask_inputs(args: argparse.Namespace, config: Config, ask: Ask) -> RegisterInputs:
    """Ask for every input not given by an option or the environment, re-asking on
    invalid answers, as act_runner's interactive register does."""
    env = env_overrides()
    instance = args.instance or env.instance_url
    while True:
        if not instance:
            instance = ask("Enter the Gitea instance URL (for example, https://gitea.com/):", False)
        try:
            _check_instance(instance)
            break
        except ConfigError as exc:
            print(f"Invalid instance URL: {exc}")
            instance = ""
    token = _given_token(args)
    while not token:
        token = ask("Enter the runner token:", True)
    hostname = socket.gethostname()
    name = args.name or env.runner_name
    if not name:
        name = ask(f"Enter the runner name (if set empty, use hostname: {hostname}):", False)
    given = _given_labels(args, config)
    labels = parse_labels(given) if given else None
    while labels is None:
        answer = ask(
            "Enter the runner labels, leave blank to use the default labels "
            f"(comma-separated, for example, {_LABEL_EXAMPLE}):",
            False,
        )
        try:
            labels = parse_labels(split_labels(answer) or DEFAULT_LABELS)
        except ConfigError as exc:
            print(f"Invalid labels ({exc}), please input again.")
    return RegisterInputs(
        instance=instance,
        token=Secret(token),
        name=name or hostname,
        labels=labels,
        ephemeral=args.ephemeral or env.ephemeral,
    )


async def _ping_until_answered(
    client: RegisterClient, inputs: RegisterInputs, attempts: int | None, interval: float
) -> None:
    attempt = 0
    last_error = ""
    while True:
        attempt += 1
        try:
            await client.ping(inputs.name)
            return
        except ConnectError as exc:
            if exc.is_config_error:
                raise RegistrationFailed(f"cannot reach {inputs.instance}: {exc}") from None
            if attempts is not None and attempt >= attempts:
                raise RegistrationFailed(
                    f"cannot reach {inputs.instance} after {attempt} attempts: {exc}"
                ) from None
            if str(exc) != last_error:
                last_error = str(exc)
                print(f"Cannot ping the Gitea instance server: {exc}; retrying every second")
        await trio.sleep(interval)


async def register_runner(
    inputs: RegisterInputs,
    *,
    insecure: bool = False,
    ping_attempts: int | None = NONINTERACTIVE_PING_ATTEMPTS,
    ping_interval: float = 1.0,
    client_factory: ClientFactory = _runner_client,
) -> Registration:
    """Ping until the instance answers (at most ``ping_attempts`` times, None: until
    cancelled), then Register once; never retried, since each success creates a runner."""
    async with client_factory(inputs.instance, insecure) as client:
        await _ping_until_answered(client, inputs, ping_attempts, ping_interval)
        request = RegisterRequest(
            name=inputs.name,
            token=str(inputs.token),
            version=__version__,
            labels=label_names(inputs.labels),
            ephemeral=inputs.ephemeral,
            capabilities=list(CAPABILITIES),
        )
        try:
            answer = await client.register(request)
        except ConnectError as exc:
            if exc.http_status is None and exc.sent:
                raise RegistrationFailed(
                    f"the answer to Register was lost ({exc}); a runner may have been "
                    "created anyway: check the instance's runner list before registering "
                    "again"
                ) from None
            raise RegistrationFailed(f"registration failed: {exc}") from None
    runner = answer.runner
    if runner is None or not runner.uuid or not runner.token:
        raise RegistrationFailed("the instance answered Register without a runner identity")
    if inputs.ephemeral and not runner.ephemeral:
        print(
            "The instance does not support ephemeral runners; the daemon will run in "
            "run-once mode instead."
        )
    return Registration(
        id=runner.id,
        uuid=runner.uuid,
        name=runner.name or inputs.name,
        token=runner.token,
        address=inputs.instance,
        labels=label_strings(inputs.labels),
        ephemeral=inputs.ephemeral,
    )
