"""A small reader for systemd unit files and the directives our units may use, with their grammar.

It exists so the units are checked on machines without systemd: every directive in systemd/ must be
one this table knows, in the right section, with a value its grammar accepts. Where systemd is
installed, test_units.py also checks the table itself against ``systemd --dump-configuration-items``
and runs ``systemd-analyze verify``.
"""

import re
from typing import Callable, Dict, List, Tuple

Directives = Dict[str, List[Tuple[str, str, int]]]  # section -> [(key, value, line number)]


def parse_unit(text: str) -> Directives:
    """Sections of a unit file as systemd reads it: ``#``/``;`` comments, ``\\`` line continuations,
    repeated keys kept in order. Raises ``ValueError`` on a line systemd would reject."""
    sections: Directives = {}
    current = None
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            if not pending:
                pending_line = number
            pending += line[:-1] + " "
            continue
        if pending:
            line, number, pending = pending + line, pending_line, ""
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError("line %d: bad section header %r" % (number, line))
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        if current is None:
            raise ValueError("line %d: directive outside a section" % number)
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            raise ValueError("line %d: not a Key=value line: %r" % (number, line))
        sections[current].append((key.strip(), value.strip(), number))
    if pending:
        raise ValueError("file ends inside a line continuation")
    return sections


def values(sections: Directives, section: str, key: str) -> List[str]:
    """Every value of ``key`` in ``section``, in order (an empty assignment resets a list in systemd)."""
    return [value for k, value, _ in sections.get(section, []) if k == key]


def last(sections: Directives, section: str, key: str) -> str:
    found = values(sections, section, key)
    if not found:
        raise KeyError("%s= not set in [%s]" % (key, section))
    return found[-1]


# --- value grammars -------------------------------------------------------------------------------

_TIME_UNITS = r"(us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|h|hr|hour|hours|d|day|days)"
_TIMESPAN = re.compile(r"(infinity|(\d+(\.\d+)?\s*%s?\s*)+)" % _TIME_UNITS)
_BOOLEANS = {"1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off"}
_SPECIFIER = re.compile(r"%[%aAbBCdEfgGhHiIjJlLmMnNopPsStTuUvVwW]")
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+\.(service|socket|target|timer|path|mount|slice|scope|device|swap|automount)")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}\$?|\d+")


def _no_stray_specifier(value: str) -> bool:
    """Every ``%`` starts a specifier systemd knows (``%%`` for a literal percent)."""
    return "%" not in _SPECIFIER.sub("", value)


def boolean(value: str) -> bool:
    return value.lower() in _BOOLEANS


def timespan(value: str) -> bool:
    return bool(_TIMESPAN.fullmatch(value))


def one_of(*choices: str) -> Callable[[str], bool]:
    return lambda value: value in choices


def words_of(*choices: str) -> Callable[[str], bool]:
    return lambda value: all(word in choices for word in value.split())


def absolute_path(value: str) -> bool:
    path = value.lstrip("-+!@:")  # prefixes: "-" ignore failure, "+" full privileges, ...
    return path.startswith("/") and _no_stray_specifier(path)


def relative_dirs(value: str) -> bool:
    return all(not part.startswith("/") and ".." not in part.split("/") for part in value.split()) and _no_stray_specifier(value)


def octal_mode(value: str) -> bool:
    return bool(re.fullmatch(r"0?[0-7]{3,4}", value))


def unit_names(value: str) -> bool:
    return all(_UNIT_NAME.fullmatch(name) for name in value.split()) and _no_stray_specifier(value)


def user_name(value: str) -> bool:
    return bool(_USER.fullmatch(value))


def user_names(value: str) -> bool:
    return all(_USER.fullmatch(name) for name in value.split())


def command_line(value: str) -> bool:
    return absolute_path(value.split()[0]) if value else False


def credential(value: str) -> bool:
    name, sep, path = value.partition(":")
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", name)) and (not sep or absolute_path(path) or bool(path) and _no_stray_specifier(path))


def any_text(value: str) -> bool:
    return _no_stray_specifier(value)


def syscall_filter(value: str) -> bool:
    return all(re.fullmatch(r"~?[@A-Za-z0-9_:-]+", word) for word in value.split())


def errno_name(value: str) -> bool:
    return bool(re.fullmatch(r"E[A-Z0-9]+|kill|log|\d+", value))


def capabilities(value: str) -> bool:
    return value == "" or all(re.fullmatch(r"~?CAP_[A-Z_]+", word) for word in value.split())


def number(value: str) -> bool:
    return value.isdigit()


def signal_name(value: str) -> bool:
    return bool(re.fullmatch(r"(SIG)?[A-Z0-9+-]+|\d+", value))


#: Directives our units may use, by section, each with the grammar of its value. A directive that is
#: not here fails the test: add it here (test_units.py checks this table against systemd's own list
#: where systemd is installed).
KNOWN: Dict[str, Dict[str, Callable[[str], bool]]] = {
    "Unit": {
        "Description": any_text,
        "Documentation": lambda v: all(re.fullmatch(r"(https?|file|info|man):\S+", u) for u in v.split()),
        "Wants": unit_names,
        "Requires": unit_names,
        "BindsTo": unit_names,
        "PartOf": unit_names,
        "After": unit_names,
        "Before": unit_names,
        "StartLimitIntervalSec": timespan,
        "StartLimitBurst": number,
    },
    "Service": {
        "Type": one_of("simple", "exec", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle"),
        "NotifyAccess": one_of("none", "main", "exec", "all"),
        "WatchdogSec": timespan,
        "TimeoutStartSec": timespan,
        "TimeoutStopSec": timespan,
        "Restart": one_of("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always"),
        "RestartSec": timespan,
        "RestartPreventExitStatus": lambda v: all(re.fullmatch(r"\d+|SIG[A-Z0-9]+", w) for w in v.split()),
        "KillMode": one_of("control-group", "mixed", "process", "none"),
        "KillSignal": signal_name,
        "EnvironmentFile": absolute_path,
        "Environment": any_text,
        "LoadCredential": credential,
        "StateDirectory": relative_dirs,
        "StateDirectoryMode": octal_mode,
        "WorkingDirectory": absolute_path,
        "ExecStart": command_line,
        "ExecReload": command_line,
        "User": user_name,
        "Group": user_name,
        "SupplementaryGroups": user_names,
        "UMask": octal_mode,
        "RemoveIPC": boolean,
        "DynamicUser": boolean,
        "PrivateDevices": boolean,
        "ProtectSystem": one_of("yes", "no", "true", "false", "full", "strict"),
        "NoNewPrivileges": boolean,
        "ProtectHome": one_of("yes", "no", "true", "false", "read-only", "tmpfs"),
        "PrivateTmp": boolean,
        "ProtectKernelTunables": boolean,
        "ProtectKernelModules": boolean,
        "ProtectKernelLogs": boolean,
        "ProtectControlGroups": boolean,
        "ProtectClock": boolean,
        "ProtectHostname": boolean,
        "RestrictAddressFamilies": words_of("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "none"),
        "RestrictNamespaces": boolean,
        "RestrictRealtime": boolean,
        "RestrictSUIDSGID": boolean,
        "LockPersonality": boolean,
        "MemoryDenyWriteExecute": boolean,
        "SystemCallArchitectures": words_of("native", "x86-64", "x86", "arm64"),
        "SystemCallFilter": syscall_filter,
        "SystemCallErrorNumber": errno_name,
        "CapabilityBoundingSet": capabilities,
        "AmbientCapabilities": capabilities,
    },
    "Install": {
        "WantedBy": unit_names,
        "RequiredBy": unit_names,
        "Alias": unit_names,
        "DefaultInstance": lambda v: bool(re.fullmatch(r"[A-Za-z0-9:_.\\-]+", v)),
    },
}


def problems(sections: Directives) -> List[str]:
    """What is wrong with a parsed unit (or drop-in), one line per problem; empty when it is fine."""
    found = []
    for section, items in sections.items():
        table = KNOWN.get(section)
        if table is None:
            found.append("[%s]: unknown section" % section)
            continue
        for key, value, number in items:
            check = table.get(key)
            if check is None:
                found.append("line %d: %s= is not a directive of [%s] that we know" % (number, key, section))
            elif not check(value):
                found.append("line %d: %s=%s is not a valid value" % (number, key, value))
    return found
