"""``amplitude-flagd run | status | dump``: options and environment in, a ``Config`` out, an exit code back.

The only module that prints results or calls ``sys.exit``. Options come from ``Config``'s fields;
each can also be set as ``FLAGD_<NAME>`` (the command line wins). The deployment key is never an
option: it comes from ``--deployment-key-file``, ``AMPLITUDE_DEPLOYMENT_KEY`` or the systemd
credential ``deployment-key``, in that order, and argv cannot carry it (ps would show it to everyone).
"""

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import Config, ConfigError, ExitCode
from .log import setup_logging

__all__ = ["main", "run_cli", "resolve_deployment_key"]

logger = logging.getLogger(__name__)

KEY_ENV = "AMPLITUDE_DEPLOYMENT_KEY"
CREDENTIAL_NAME = "deployment-key"
ENV_PREFIX = "FLAGD_"
MAX_KEY_FILE_BYTES = 4096

COMMANDS = {
    "run": "publish flag configs into shared memory until stopped",
    "status": "report version, age, flag count and publisher liveness; non-zero exit when stale or absent",
    "dump": "print the current snapshot as JSON",
}


class _KeyOnCommandLine(argparse.Action):
    """Refuses ``--deployment-key VALUE`` without ever echoing VALUE (argparse would, in its error)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        parser.error("the deployment key is not accepted on the command line (other users can read it there); "
                     "set %s, use --deployment-key-file PATH or a systemd credential named %s"
                     % (KEY_ENV, CREDENTIAL_NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amplitude-flagd", allow_abbrev=False,
                                     description="Per-host flag-config publisher for Amplitude Experiment workers.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command, summary in COMMANDS.items():
        sub = commands.add_parser(command, help=summary, description=summary, allow_abbrev=False)
        sub.add_argument("--deployment-key-file", metavar="PATH",
                         help="file holding the deployment key [env %sDEPLOYMENT_KEY_FILE]" % ENV_PREFIX)
        sub.add_argument("--deployment-key", nargs="?", action=_KeyOnCommandLine, help=argparse.SUPPRESS)
        for name, spec in Config.option_fields(command).items():
            kwargs: Dict[str, Any] = {"dest": name, "default": None, "type": _converter(spec.type)}
            if "choices" in spec.metadata:
                kwargs["choices"] = spec.metadata["choices"]
            if "metavar" in spec.metadata:
                kwargs["metavar"] = spec.metadata["metavar"]
            default = "" if spec.default is None else ", default %s" % spec.default
            kwargs["help"] = "%s [env %s%s]" % (spec.metadata["help"], _env_name(name), default)
            sub.add_argument("--" + name.replace("_", "-"), **kwargs)
        if command == "status":
            sub.add_argument("--json", action="store_true", help="print the report as JSON")
        if command == "dump":
            sub.add_argument("--flags-only", action="store_true",
                             help="print only the flag list (usable as a --flags-file)")
    return parser


def resolve_deployment_key(key_file: Optional[str], environ: Mapping[str, str]) -> Tuple[str, str]:
    """The deployment key and where it came from (for logs; never the key itself).

    :raises ConfigError: when no source has a key, or a key file cannot be read.
    """
    key_file = key_file or environ.get(ENV_PREFIX + "DEPLOYMENT_KEY_FILE")
    if key_file:
        return _read_key_file(key_file), "file"
    if environ.get(KEY_ENV, "").strip():
        return _check_key(environ[KEY_ENV], KEY_ENV), "environment"
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = os.path.join(credentials, CREDENTIAL_NAME)
        if os.path.exists(path):
            return _read_key_file(path), "credential"
    raise ConfigError("no deployment key: set %s, pass --deployment-key-file PATH, or load a systemd credential "
                      "named %s (LoadCredential=%s:/path)" % (KEY_ENV, CREDENTIAL_NAME, CREDENTIAL_NAME))


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Options over ``FLAGD_*`` variables over ``Config``'s defaults. :raises ConfigError:."""
    key, origin = resolve_deployment_key(args.deployment_key_file, environ)
    values: Dict[str, Any] = {"deployment_key": key}
    args.key_origin = origin
    for name, spec in Config.option_fields(args.command).items():
        value = getattr(args, name, None)
        if value is None and environ.get(_env_name(name), "") != "":
            raw = environ[_env_name(name)]
            try:
                value = _converter(spec.type)(raw)
            except ValueError:
                raise ConfigError("%s=%r is not a valid value" % (_env_name(name), raw)) from None
            choices = spec.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError("%s must be one of %s, got %r" % (_env_name(name), ", ".join(choices), raw))
        if value is not None:
            values[name] = value
    if values.get("flags_file"):
        values["flags_file"] = os.path.abspath(values["flags_file"])  # the source name says which file
    if "state_dir" in Config.option_fields(args.command) and "state_dir" not in values:
        # systemd's StateDirectory= sets this (several directories are separated by ':').
        state_directory = environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state_directory:
            values["state_dir"] = state_directory
    return Config(**values)


def run_cli(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    """Parse, build the config, run the command; returns the exit code."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = build_config(args, environ)
    except ConfigError as error:
        print("amplitude-flagd %s: %s" % (args.command, error), file=sys.stderr)
        return ExitCode.USAGE
    setup_logging(config.log_level, secret=config.deployment_key)
    if args.command == "run":
        from .daemon import Daemon

        logger.info("event=deployment_key origin=%s key_hash=%s", args.key_origin, config.key_hash)
        return Daemon(config).run()
    if args.command == "status":
        return _status(config, args.json)
    return _dump(config, args.flags_only)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point (``amplitude-flagd``, ``python -m flagd``)."""
    try:
        code = run_cli(argv)
    except KeyboardInterrupt:
        code = ExitCode.ERROR
    except BrokenPipeError:
        # `amplitude-flagd dump | head`: the reader left; say nothing more on a dead pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = ExitCode.OK
    sys.exit(int(code))


def _status(config: Config, as_json: bool) -> int:
    from .status import status

    code, report = status(config)
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        width = max(len(name) for name in report)
        for name, value in report.items():
            if name == "problems":
                value = "; ".join(value) or "none"
            print("%-*s  %s" % (width, name, "-" if value is None else value))
    return code


def _dump(config: Config, flags_only: bool) -> int:
    from .status import dump

    code, snapshot = dump(config)
    if snapshot is None:
        print("amplitude-flagd dump: nothing published for this deployment key (key hash %s, prefix %s)"
              % (config.key_hash, config.shm_prefix), file=sys.stderr)
        return code
    print(json.dumps(snapshot["flags"] if flags_only else snapshot, indent=2))
    return code


def _read_key_file(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError("cannot read the deployment key file %s: %s" % (path, error.strerror or error)) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError("the deployment key file %s is too large to hold a key" % path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the deployment key file %s is not UTF-8 text" % path) from None
    return _check_key(text, path)


def _check_key(text: str, origin: str) -> str:
    """Strip the line break editors add; refuse anything that cannot be a key, without echoing it."""
    key = text.strip()
    if not key:
        raise ConfigError("the deployment key from %s is empty" % origin)
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError("the deployment key from %s contains whitespace or control characters" % origin)
    return key


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _converter(annotation: Any) -> Any:
    return int if annotation in (int, Optional[int]) else str
