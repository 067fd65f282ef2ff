"""``amplitude-flagd run | status | dump | check``: options and environment in, a ``Config`` out, an exit code back.

The only module that prints results or calls ``sys.exit``. Options come from ``Config``'s fields;
each can also be set as ``FLAGD_<NAME>`` (the command line wins). The deployment key is never an
option: it comes from ``--deployment-key-file``, ``AMPLITUDE_DEPLOYMENT_KEY`` or the systemd
credential ``deployment-key``, in that order, and argv cannot carry it (ps would show it to everyone).
"""

import argparse
import functools
import json
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import Config, ConfigError, ExitCode
from .log import Quoted, setup_logging

__all__ = ["main", "run_cli", "resolve_deployment_key"]

logger = logging.getLogger(__name__)

KEY_ENV = "AMPLITUDE_DEPLOYMENT_KEY"
CREDENTIAL_NAME = "deployment-key"
#: The analytics API key flagd delivers the workers' events with (optional; same rules as the deployment key).
ANALYTICS_KEY_ENV = "AMPLITUDE_ANALYTICS_API_KEY"
ANALYTICS_CREDENTIAL_NAME = "analytics-api-key"
ENV_PREFIX = "FLAGD_"
MAX_KEY_FILE_BYTES = 4096
#: Cohort credentials (the project's analytics API key and secret key, docs/cohorts.md): option
#: (a file), environment variable and systemd credential name, looked at in that order.
COHORT_CREDENTIALS = (("cohort_api_key_file", "AMPLITUDE_COHORT_API_KEY", "cohort-api-key", "cohort API key"),
                      ("cohort_secret_key_file", "AMPLITUDE_COHORT_SECRET_KEY", "cohort-secret-key",
                       "cohort secret key"))

COMMANDS = {
    "run": "publish flag configs into shared memory until stopped",
    "status": "report version, age, flag count and publisher liveness; exit 0 ok, 8 degraded, 5 stale, 6 absent",
    "dump": "print the current snapshot as JSON",
    "clean": "remove the shared-memory files of a key whose flagd is gone (refuses while it runs)",
}
CHECK_SUMMARY = ("check a flags file without publishing it: one line per problem naming flag and field; "
                 "exit 0 when it is fine, 7 when it has problems (needs no deployment key)")


class _SecretOnCommandLine(argparse.Action):
    """Refuses a secret given as an option (``--deployment-key VALUE``) without ever echoing VALUE
    (argparse would, in its error); ``message`` says where the secret goes instead."""

    def __init__(self, *args: Any, message: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.message = message

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        parser.error(self.message)


def _refuse_secret(message: str) -> Any:
    """The ``action`` of a hidden option that refuses a secret on the command line."""
    return functools.partial(_SecretOnCommandLine, message=message)


class _PrintVersion(argparse.Action):
    """``--version`` on one line (argparse's own action wraps it at the terminal width)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        print(_version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amplitude-flagd", allow_abbrev=False,
                                     description="Per-host flag-config publisher for Amplitude Experiment workers.")
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command, summary in COMMANDS.items():
        sub = commands.add_parser(command, help=summary, description=summary, allow_abbrev=False)
        sub.add_argument("--deployment-key-file", metavar="PATH",
                         help="file holding the deployment key [env %sDEPLOYMENT_KEY_FILE]" % ENV_PREFIX)
        sub.add_argument("--deployment-key", nargs="?", help=argparse.SUPPRESS, action=_refuse_secret(
            "the deployment key is not accepted on the command line (other users can read it there); set %s, use "
            "--deployment-key-file PATH or a systemd credential named %s" % (KEY_ENV, CREDENTIAL_NAME)))
        if command == "run":
            for dest, env, credential, what in COHORT_CREDENTIALS:
                sub.add_argument("--" + dest.replace("_", "-"), metavar="PATH", dest=dest,
                                 help="file holding the %s, for cohort targeting [env %s%s; or %s, or the "
                                      "systemd credential %s]" % (what, ENV_PREFIX, dest.upper(), env, credential))
                sub.add_argument("--" + dest[:-5].replace("_", "-"), nargs="?", help=argparse.SUPPRESS,
                                 action=_refuse_secret(
                    "cohort credentials are not accepted on the command line (other users can read it there); "
                    "set AMPLITUDE_COHORT_API_KEY and AMPLITUDE_COHORT_SECRET_KEY, use --cohort-api-key-file and "
                    "--cohort-secret-key-file, or systemd credentials named cohort-api-key and cohort-secret-key"))
            sub.add_argument("--analytics-api-key-file", metavar="PATH",
                             help="file holding the analytics API key flagd delivers the workers' events with "
                             "[env %sANALYTICS_API_KEY_FILE; or %s, or the systemd credential %s; none: workers "
                             "deliver their own]" % (ENV_PREFIX, ANALYTICS_KEY_ENV, ANALYTICS_CREDENTIAL_NAME))
            sub.add_argument("--analytics-api-key", nargs="?", help=argparse.SUPPRESS, action=_refuse_secret(
                "the analytics API key is not accepted on the command line (other users can read it there); set "
                "%s, use --analytics-api-key-file PATH or a systemd credential named %s"
                % (ANALYTICS_KEY_ENV, ANALYTICS_CREDENTIAL_NAME)))
        for name, spec in Config.option_fields(command).items():
            kwargs: Dict[str, Any] = {"dest": name, "default": None, "type": _converter(spec.type)}
            if spec.type is bool:
                kwargs = {"dest": name, "default": None, "action": "store_true"}
            if "choices" in spec.metadata:
                kwargs["choices"] = spec.metadata["choices"]
                kwargs["type"] = str.lower  # "EU", as the SDK spells the zone, is "eu"
            if "metavar" in spec.metadata:
                kwargs["metavar"] = spec.metadata["metavar"]
            default = "" if spec.default is None else ", default %s" % spec.default
            kwargs["help"] = "%s [env %s%s]" % (spec.metadata["help"], _env_name(name), default)
            sub.add_argument("--" + name.replace("_", "-"), **kwargs)
        if command == "status":
            sub.add_argument("--json", action="store_true", help="print the report as JSON")
            sub.add_argument("--all", action="store_true",
                             help="every key published on this host (all prefixes unless --shm-prefix); no key needed")
        if command in ("status", "clean"):
            sub.add_argument("--key-hash", metavar="HASH",
                             help="the key whose hash (status, logs, file names) is HASH; no key needed")
        if command == "dump":
            sub.add_argument("--flags-only", action="store_true",
                             help="print only the flag list (usable as a --flags-file)")
    check = commands.add_parser("check", help=CHECK_SUMMARY, description=CHECK_SUMMARY, allow_abbrev=False)
    check.add_argument("file", metavar="FILE", help="the flags file (a JSON array of flags, the API's shape)")
    check.add_argument("--allow-empty-flags", action="store_true", default=None,
                       help="an empty list is fine [env %sALLOW_EMPTY_FLAGS]" % ENV_PREFIX)
    return parser


def resolve_deployment_key(key_file: Optional[str], environ: Mapping[str, str]) -> Tuple[str, str]:
    """The deployment key and where it came from (for logs; never the key itself).

    :raises ConfigError: when no source has a key, or a key file cannot be read.
    """
    key, origin = _resolve_secret(key_file, "DEPLOYMENT_KEY_FILE", KEY_ENV, CREDENTIAL_NAME, "deployment key",
                                  environ)
    if key:
        return key, origin
    raise ConfigError("no deployment key: set %s, pass --deployment-key-file PATH, or load a systemd credential "
                      "named %s (LoadCredential=%s:/path)" % (KEY_ENV, CREDENTIAL_NAME, CREDENTIAL_NAME))


def resolve_cohort_credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> Tuple[str, str, str]:
    """``(api key, secret key, where they came from)``; empty strings when cohort targeting is off.

    Each comes from its file option (or ``FLAGD_COHORT_*_KEY_FILE``), its environment variable, or
    the systemd credential of its name, in that order. :raises ConfigError: a file cannot be read.
    """
    found = [_resolve_secret(getattr(args, dest, None), dest.upper(), env, credential, what, environ)
             for dest, env, credential, what in COHORT_CREDENTIALS]
    return found[0][0], found[1][0], ",".join(origin for key, origin in found if key)


def resolve_analytics_key(key_file: Optional[str], environ: Mapping[str, str]) -> Tuple[str, str]:
    """The analytics API key and where it came from, ``("", "none")`` when none is given:
    ``--analytics-api-key-file``, ``AMPLITUDE_ANALYTICS_API_KEY``, the systemd credential
    ``analytics-api-key``, in that order.

    :raises ConfigError: a key file cannot be read or holds no key.
    """
    return _resolve_secret(key_file, "ANALYTICS_API_KEY_FILE", ANALYTICS_KEY_ENV, ANALYTICS_CREDENTIAL_NAME,
                           "analytics API key", environ)


def _resolve_secret(key_file: Optional[str], file_setting: str, env: str, credential: str, what: str,
                    environ: Mapping[str, str]) -> Tuple[str, str]:
    """A secret and where it came from, ``("", "none")`` when no source has it: ``key_file`` (the
    option, else ``FLAGD_<file_setting>``), the environment variable ``env``, the systemd
    credential ``credential``, in that order. :raises ConfigError: a file cannot be read, or a
    source holds no usable key (``what`` names it in the message)."""
    key_file = key_file or environ.get(ENV_PREFIX + file_setting)
    if key_file:
        return _read_key_file(key_file, what), "file"
    if environ.get(env, "").strip():
        return _check_key(environ[env], env, what), "environment"
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = os.path.join(credentials, credential)
        if os.path.exists(path):
            return _read_key_file(path, what), "credential"
    return "", "none"


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Options over ``FLAGD_*`` variables over ``Config``'s defaults. :raises ConfigError:."""
    key, origin = resolve_deployment_key(args.deployment_key_file, environ)
    values: Dict[str, Any] = {"deployment_key": key}
    args.key_origin = origin
    if args.command == "run":
        values["analytics_api_key"], args.analytics_key_origin = resolve_analytics_key(
            getattr(args, "analytics_api_key_file", None), environ)
        values["cohort_api_key"], values["cohort_secret_key"], args.cohort_origin = \
            resolve_cohort_credentials(args, environ)
    for name, spec in Config.option_fields(args.command).items():
        value = getattr(args, name, None)
        if value is None and environ.get(_env_name(name), "") != "":
            raw = environ[_env_name(name)]
            try:
                value = _converter(spec.type)(raw)
            except ValueError:
                raise ConfigError("%s=%r is not a valid value" % (_env_name(name), raw)) from None
            choices = spec.metadata.get("choices")
            if choices:
                value = value.lower()
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
    if args.command == "check":
        return _check(args.file, bool(args.allow_empty_flags or _truthy(environ.get(ENV_PREFIX + "ALLOW_EMPTY_FLAGS", ""))))
    if getattr(args, "all", False) or getattr(args, "key_hash", None):
        return _by_key_hash(args, environ)
    try:
        config = build_config(args, environ)
    except ConfigError as error:
        print("amplitude-flagd %s: %s" % (args.command, error), file=sys.stderr)
        return ExitCode.USAGE
    handler = setup_logging(config.log_level, secret=config.deployment_key, more_secrets=(config.analytics_api_key,))
    _redact_cohort_credentials(handler, config)
    if args.command == "run":
        from .daemon import Daemon

        if config.flags_file and not os.path.isfile(config.flags_file):
            # A typo in a path is not an outage to ride out: retrying would never fix it.
            print("amplitude-flagd run: --flags-file %s does not exist or is not a file (%s); nothing was "
                  "published. Fix the path, or check the file with `amplitude-flagd check PATH`."
                  % (config.flags_file, "a directory" if os.path.isdir(config.flags_file) else "no such file"),
                  file=sys.stderr)
            return ExitCode.USAGE

        logger.info("event=deployment_key origin=%s key_hash=%s", args.key_origin, config.key_hash)
        logger.info("event=analytics_api_key origin=%s", args.analytics_key_origin)
        if config.cohort_api_key:
            logger.info("event=cohort_targeting credentials=%s cohort_server=%s", args.cohort_origin,
                        Quoted(config.cohort_url))
        from amplitude_experiment._coexist import conflict_message

        conflict = conflict_message()
        if conflict:
            logger.warning("event=sdk_conflict msg=%s", Quoted(conflict.split(": ", 1)[1]))
        return Daemon(config).run()
    if args.command == "status":
        return _status(config, args.json)
    if args.command == "clean":
        return _clean(config.shm_prefix, config.key_hash)
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
    _print_report(report, as_json)
    return code


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    width = max(len(name) for name in report)
    for name, value in report.items():
        if isinstance(value, list):
            value = "; ".join(_cohort_text(item) if isinstance(item, dict) else item for item in value) or "none"
        elif isinstance(value, dict):
            value = " ".join("%s=%s" % item for item in value.items())
        print("%-*s  %s" % (width, name, "-" if value is None else value))


def _cohort_text(cohort: Dict[str, Any]) -> str:
    """One cohort of ``status``, in words."""
    return "%s (%s, %s, last modified %s, %s%s)" % (
        cohort.get("id"), cohort.get("group_type") or "group type unknown",
        "not loaded" if cohort.get("size") is None else "%s members" % cohort.get("size"),
        cohort.get("last_modified") or "-",
        "downloaded %.0f s ago" % cohort["age_s"] if cohort.get("age_s") is not None else "never downloaded",
        ", last error: %s" % cohort["last_error"] if cohort.get("last_error") else "")


#: Worst first: the exit code of `status --all` is the worst of its keys'.
_SEVERITY = (ExitCode.ABSENT, ExitCode.STALE, ExitCode.DEGRADED, ExitCode.OK)
_HOST_COLUMNS = ("shm_prefix", "key_hash", "state", "version", "age_s", "publisher_pid", "publisher_alive",
                 "flag_count", "last_error_kind")


def _by_key_hash(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``status --all``, ``status --key-hash`` and ``clean --key-hash``: no deployment key involved."""
    from .config import DEFAULT_SHM_PREFIX
    from .status import host_status, status_by_key_hash

    prefix = args.shm_prefix or environ.get(ENV_PREFIX + "SHM_PREFIX") or None
    max_age = getattr(args, "max_age_ms", None) or int(environ.get(ENV_PREFIX + "MAX_AGE_MS") or 0) or None
    owner = getattr(args, "flagd_owner", None) or environ.get(ENV_PREFIX + "FLAGD_OWNER") or None
    hashed = (args.key_hash or "").strip().lower()
    if args.key_hash and (len(hashed) != 16 or any(c not in "0123456789abcdef" for c in hashed)):
        print("amplitude-flagd %s: --key-hash must be the 16 hex digits status and the logs show, got %r"
              % (args.command, args.key_hash), file=sys.stderr)
        return ExitCode.USAGE
    if args.command == "clean":
        return _clean(prefix or DEFAULT_SHM_PREFIX, hashed)
    if hashed:
        code, report = status_by_key_hash(prefix or DEFAULT_SHM_PREFIX, hashed, max_age, owner=owner)
        _print_report(report, args.json)
        return code
    reports = host_status(prefix, max_age, owner)
    codes = {"ok": ExitCode.OK, "degraded": ExitCode.DEGRADED, "stale": ExitCode.STALE,
             "absent": ExitCode.ABSENT}
    if args.json:
        print(json.dumps(reports, indent=2, sort_keys=True))
    elif reports:
        rows = [[str("-" if report.get(column) is None else report.get(column)) for column in _HOST_COLUMNS]
                for report in reports]
        widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(_HOST_COLUMNS)]
        for row in [list(_HOST_COLUMNS)] + rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    else:
        print("nothing published on this host%s" % (" under prefix %s" % prefix if prefix else ""), file=sys.stderr)
    states = {codes[report["state"]] for report in reports} or {ExitCode.ABSENT}
    return next(code for code in _SEVERITY if code in states)


def _clean(prefix: str, hashed: str) -> int:
    from .status import clean

    code, removed, reason = clean(prefix, hashed)
    for name in removed:
        print("removed %s" % name)
    if reason:
        print("amplitude-flagd clean: %s" % reason, file=sys.stderr)
    return code


def _check(path: str, allow_empty: bool) -> int:
    from .check import check_body
    from .sources import FileSource, SourceError

    try:
        body = FileSource(path).fetch()
    except SourceError as error:
        print("amplitude-flagd check: %s" % error, file=sys.stderr)
        return ExitCode.USAGE
    problems = check_body(body, allow_empty)
    for problem in problems:
        print("%s: %s" % (path, problem))
    if problems:
        print("%s: %d problem%s; flagd would not publish this file" % (path, len(problems), "" if len(problems) == 1 else "s"),
              file=sys.stderr)
        return ExitCode.INVALID
    print("%s: ok" % path, file=sys.stderr)
    return ExitCode.OK


def _dump(config: Config, flags_only: bool) -> int:
    from .status import dump

    code, snapshot = dump(config)
    if snapshot is None:
        print("amplitude-flagd dump: nothing published for this deployment key (key hash %s, prefix %s)"
              % (config.key_hash, config.shm_prefix), file=sys.stderr)
        return code
    print(json.dumps(snapshot["flags"] if flags_only else snapshot, indent=2))
    return code


def _read_key_file(path: str, what: str = "deployment key") -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError("cannot read the %s file %s: %s" % (what, path, error.strerror or error)) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError("the %s file %s is too large to hold a key" % (what, path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the %s file %s is not UTF-8 text" % (what, path)) from None
    return _check_key(text, path, what)


def _check_key(text: str, origin: str, what: str = "deployment key") -> str:
    """Strip the line break editors add; refuse anything that cannot be a key, without echoing it."""
    key = text.strip()
    if not key:
        raise ConfigError("the %s from %s is empty" % (what, origin))
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError("the %s from %s contains whitespace or control characters" % (what, origin))
    return key


def _redact_cohort_credentials(handler: logging.Handler, config: Config) -> None:
    """Cohort credentials, and the Basic token made of them, never reach the log either."""
    from amplitude_experiment._cohort_api import cohort_headers

    from .log import RedactFilter

    if not config.cohort_api_key:
        return
    token = cohort_headers(config.cohort_api_key, config.cohort_secret_key)["Authorization"][len("Basic "):]
    for secret in (config.cohort_api_key, config.cohort_secret_key, token):
        handler.addFilter(RedactFilter(secret))


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _version_text() -> str:
    from amplitude_experiment.version import DISTRIBUTION, __version__, distribution_version

    return "amplitude-flagd %s (%s; SDK API of amplitude-experiment %s)" % (
        distribution_version() or "unknown, not installed", DISTRIBUTION, __version__)


def _truthy(text: str) -> bool:
    """``FLAGD_ALLOW_EMPTY_FLAGS=1``: 1, true, yes and on (any case) are true; anything else is false."""
    return text.strip().lower() in ("1", "true", "yes", "on")


def _converter(annotation: Any) -> Any:
    if annotation is bool:
        return _truthy
    return int if annotation in (int, Optional[int]) else str
