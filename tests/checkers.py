"""Second, independent reviews of the text advisor renders: golden files say only that the output did not change;
these say whether it is valid for the program that reads it. Each function returns a list of problems (empty: valid).

- systemd units: a grammar check written from systemd.syntax(7) and systemd.service(5)/systemd.unit(5)
  (``systemd_unit_problems``), and systemd's own ``systemd-analyze verify`` (``systemd_analyze_problems``);
- compose files: a YAML parse and a check of the fields used against a subset of the Compose Specification's JSON
  schema (``compose_problems``);
- shell scripts: ``bash -n`` (``shell_problems``);
- engine command lines: llama-server's flag table from llama.cpp common/arg.cpp (``llama_server_argv_problems``) and
  llama-cpp-python's own argparse parser (``llama_cpp_python_argv_problems``, needs llama-cpp-python installed).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ENGINE_ARGS = Path(__file__).parent / "data" / "engine-args"

# --- systemd --------------------------------------------------------------------------------------------------------

#: The keys a unit advisor writes may use, per section, from systemd.unit(5) ([Unit] and [Install] options) and
#: systemd.service(5) / systemd.exec(5) / systemd.kill(5) ([Service] options), systemd 252.
SYSTEMD_KEYS = {
    "Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires", "BindsTo", "PartOf",
             "Conflicts", "ConditionPathExists", "StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {"Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecReload", "Restart",
                "RestartSec", "TimeoutStartSec", "TimeoutStopSec", "Environment", "EnvironmentFile", "User", "Group",
                "WorkingDirectory", "KillMode", "KillSignal", "LimitMEMLOCK", "LimitNOFILE", "UnsetEnvironment",
                "SupplementaryGroups", "DynamicUser"},
    "Install": {"WantedBy", "RequiredBy", "Alias", "Also"},
}
#: systemd.service(5): Type= and Restart= values.
SYSTEMD_VALUES = {
    "Type": {"simple", "exec", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle"},
    "Restart": {"no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always"},
}
#: systemd.time(7): a time span is numbers with optional units ("5", "5s", "1min 30s").
TIMESPAN = re.compile(r"^(\d+(\.\d+)?\s*(us|usec|ms|msec|s|sec|seconds?|m|min|minutes?|h|hr|hours?|d|days?)?\s*)+$"
                      r"|^infinity$")
#: systemd.unit(5): unit names are "name.type" with these characters (unit name prefix: ASCII letters, digits,
#: ":", "-", "_", ".", "\\"; an "@" for templates).
UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|device|mount|automount|swap|path|timer|slice|"
                       r"scope)$")


def systemd_unit_problems(text: str) -> list[str]:
    """systemd.syntax(7): lines are comments (# ;), [Section] headers or Key=Value assignments (a trailing backslash
    continues a line); keys are checked against SYSTEMD_KEYS, a few values against their documented grammar, and
    ExecStart= against systemd.service(5) "Command lines" (one command, quotes balanced, a program name first)."""
    problems: list[str] = []
    section = None
    seen: dict[str, dict[str, list[str]]] = {}
    lines = text.replace("\\\n", " ").splitlines()
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        m = re.fullmatch(r"\[([^\[\]]+)\]", s)
        if m:
            section = m.group(1)
            if section not in SYSTEMD_KEYS:
                problems.append(f"line {n}: section [{section}] is not one advisor's units may use")
            seen.setdefault(section, {})
            continue
        if section is None:
            problems.append(f"line {n}: an assignment before any section header")
            continue
        key, eq, value = s.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not re.fullmatch(r"[A-Za-z0-9-]+", key):
            problems.append(f"line {n}: not a Key=Value assignment: {s!r}")
            continue
        if section in SYSTEMD_KEYS and key not in SYSTEMD_KEYS[section]:
            problems.append(f"line {n}: unknown key {key}= in [{section}]")
        seen.setdefault(section, {}).setdefault(key, []).append(value)
        if key in SYSTEMD_VALUES and value not in SYSTEMD_VALUES[key]:
            problems.append(f"line {n}: {key}={value} is not one of {sorted(SYSTEMD_VALUES[key])}")
        if key.endswith("Sec") and not TIMESPAN.match(value):
            problems.append(f"line {n}: {key}={value} is not a time span (systemd.time(7))")
        if key in ("After", "Before", "Wants", "Requires", "WantedBy", "RequiredBy"):
            bad = [u for u in value.split() if not UNIT_NAME.match(u)]
            if bad:
                problems.append(f"line {n}: {key}= names no unit: {bad}")
        if key.startswith("Exec"):
            problems += [f"line {n}: {p}" for p in _exec_problems(value)]
    service = seen.get("Service", {})
    if "Service" not in seen:
        problems.append("no [Service] section")
    elif len(service.get("ExecStart", [])) != 1 and service.get("Type", ["simple"])[-1] != "oneshot":
        problems.append(f"a Type={service.get('Type', ['simple'])[-1]} service needs exactly one ExecStart=")
    return problems


def _exec_problems(value: str) -> list[str]:
    """systemd.service(5) "Command lines": optional prefixes (@ - : + !), then the program and its arguments,
    split like a shell's words; ";" alone separates commands (only ExecStartPre/Post may have several)."""
    try:
        words = shlex.split(value.lstrip("@-:+!"))
    except ValueError as e:
        return [f"command line does not parse: {e}"]
    if not words:
        return ["empty command line"]
    out = []
    if ";" in words:
        out.append("several commands on one Exec line")
    if "%" in value and re.search(r"%(?![%nNpPiIjJfcurRtTSHbCEghsUvVaAlmMoqwWBd])", value):
        out.append("a % that is not a systemd specifier: write %% (systemd.unit(5) 'Specifiers')")
    if "$" in value and re.search(r"\$(?!\{?[A-Za-z_])", value):
        out.append("a $ that systemd would not expand: write $$ (systemd.service(5) 'Command lines')")
    return out


def exec_start_argv(unit: str) -> list[str]:
    """The ExecStart= command of a unit, as the words systemd passes to execve()."""
    for line in unit.replace("\\\n", " ").splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line[len("ExecStart="):].lstrip("@-:+!"))
    raise ValueError("no ExecStart=")


def systemd_analyze_problems(unit: str, name: str = "advisor-check.service") -> list[str]:
    """``systemd-analyze verify`` on the unit, its program replaced by an executable stub of the same name in a
    temporary directory (verify checks that the program exists and is executable). Every line it prints is a
    problem: it reports unknown keys and bad values as warnings with exit status 0."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return ["systemd-analyze is not on PATH (install systemd, or deselect with -m 'not systemd')"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        lines = []
        for line in unit.splitlines():
            if line.startswith("ExecStart="):
                words = exec_start_argv(unit)
                stub = d / "bin" / Path(words[0]).name
                stub.parent.mkdir(exist_ok=True)
                stub.write_text("#!/bin/sh\nexit 0\n")
                stub.chmod(0o755)
                line = "ExecStart=" + shlex.join([str(stub), *words[1:]])
            lines.append(line)
        path = d / name
        path.write_text("\n".join(lines) + "\n")
        done = subprocess.run([exe, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60)
    out = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    if done.returncode != 0 and not out:
        out = [f"systemd-analyze verify exited {done.returncode}"]
    return out


# --- compose --------------------------------------------------------------------------------------------------------

#: The fields of a Compose file that advisor writes, as a subset of the Compose Specification's JSON schema
#: (compose-spec/compose-spec schema/compose-spec.json, draft-07; definitions "service", "command",
#: "deployment".resources.reservations.devices, "devices"; Apache-2.0). Written here from the spec, not copied: each
#: node is {"type": ..., "properties": ..., "items": ..., "oneOf": [...], "required": [...], "pattern": ...}.
#: Objects take no other properties than those listed here, except ``x-`` extensions, as the spec's
#: ``additionalProperties: false`` nodes say; a field advisor starts to use must be added here from the spec.
_STRINGS = {"type": "array", "items": {"type": "string"}}
COMPOSE_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "name": {"type": "string"},
        "services": {"type": "object", "keys": r"^[a-zA-Z0-9._-]+$", "values": {
            "type": "object",
            "properties": {
                "image": {"type": "string"},
                "container_name": {"type": "string"},
                # "command": null, a string, or a list of strings (definitions.command)
                "command": {"oneOf": [{"type": "null"}, {"type": "string"}, _STRINGS]},
                "entrypoint": {"oneOf": [{"type": "null"}, {"type": "string"}, _STRINGS]},
                # ports: numbers, "[HOST:]CONTAINER[/PROTOCOL]" strings or long-syntax objects
                "ports": {"type": "array", "items": {"oneOf": [{"type": "number"}, {"type": "string",
                          "pattern": r"^((\[?[0-9a-fA-F.:]*\]?:)?[0-9-]+:)?[0-9-]+(/(tcp|udp|sctp))?$"},
                          {"type": "object", "properties": {"target": {"type": "integer"},
                                                            "published": {"oneOf": [{"type": "string"},
                                                                                    {"type": "integer"}]},
                                                            "protocol": {"type": "string"},
                                                            "host_ip": {"type": "string"}}}]}},
                # volumes: short syntax "SOURCE:TARGET[:MODE]" or long syntax with type/source/target
                "volumes": {"type": "array", "items": {"oneOf": [{"type": "string", "pattern": r"^[^:]+:/[^:]*(:[a-z,]+)?$"},
                            {"type": "object", "required": ["type"], "properties": {
                                "type": {"type": "string"}, "source": {"type": "string"},
                                "target": {"type": "string"}, "read_only": {"type": "boolean"}}}]}},
                "environment": {"oneOf": [{"type": "object", "keys": r".+", "values": {"oneOf": [
                    {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}}, _STRINGS]},
                "devices": {"type": "array", "items": {"oneOf": [{"type": "string"}, {
                    "type": "object", "required": ["source"], "properties": {
                        "source": {"type": "string"}, "target": {"type": "string"},
                        "permissions": {"type": "string"}}}]}},
                "group_add": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "number"}]}},
                "ipc": {"type": "string"},
                "shm_size": {"oneOf": [{"type": "number"}, {"type": "string"}]},
                "restart": {"type": "string"},
                # definitions.healthcheck: test is a string or a list of strings; durations are strings
                "healthcheck": {"type": "object", "properties": {
                    "test": {"oneOf": [{"type": "string"}, _STRINGS]}, "interval": {"type": "string"},
                    "timeout": {"type": "string"}, "start_period": {"type": "string"},
                    "start_interval": {"type": "string"}, "retries": {"type": "number"},
                    "disable": {"type": "boolean"}}},
                "user": {"type": "string"},
                "working_dir": {"type": "string"},
                "stop_signal": {"type": "string"},
                "stop_grace_period": {"type": "string"},
                "deploy": {"type": "object", "properties": {"resources": {"type": "object", "properties": {
                    "reservations": {"type": "object", "properties": {"devices": {"type": "array", "items": {
                        "type": "object", "required": ["capabilities"], "properties": {
                            "capabilities": _STRINGS,
                            "count": {"oneOf": [{"type": "string", "pattern": "^all$"}, {"type": "integer"}]},
                            "device_ids": _STRINGS,
                            "driver": {"type": "string"},
                            "options": {"type": "object", "keys": r".+", "values": {"type": "string"}}}}}}}}}}},
            },
        }},
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: Any, t: str) -> bool:
    if t in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok and (t == "number" or isinstance(value, int))
    return isinstance(value, _TYPES[t])


def schema_problems(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Validate ``value`` against one node of the subset schema above."""
    if "oneOf" in schema:
        if sum(not schema_problems(value, s, where) for s in schema["oneOf"]) != 1:
            return [f"{where}: {value!r} matches none (or several) of the forms the spec allows"]
        return []
    if not _type_ok(value, schema["type"]):
        return [f"{where}: {value!r} is not of type {schema['type']}"]
    out: list[str] = []
    if "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if schema["type"] == "array":
        for i, item in enumerate(value):
            out += schema_problems(item, schema["items"], f"{where}[{i}]")
    if schema["type"] == "object":
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{where}: required field {key!r} missing")
        for key, item in value.items():
            if "keys" in schema:
                if not re.search(schema["keys"], str(key)):
                    out.append(f"{where}: key {key!r} does not match {schema['keys']}")
                out += schema_problems(item, schema["values"], f"{where}.{key}")
            elif key in schema.get("properties", {}):
                out += schema_problems(item, schema["properties"][key], f"{where}.{key}")
            elif not str(key).startswith("x-"):
                out.append(f"{where}: field {key!r} is not in the Compose spec subset checked here")
    return out


def compose_problems(text: str) -> list[str]:
    """Parse as YAML (PyYAML's safe loader) and check against COMPOSE_SUBSET."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"not YAML: {e}"]
    return schema_problems(doc, COMPOSE_SUBSET)


def compose_command(text: str) -> list[str]:
    """The command list of the file's only service."""
    import yaml

    (service,) = yaml.safe_load(text)["services"].values()
    return list(service["command"])


# --- shell ----------------------------------------------------------------------------------------------------------


def shell_problems(text: str) -> list[str]:
    """``bash -n``: the script parses (no unbalanced quotes, no broken here-documents or compound commands)."""
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    return [ln for ln in done.stderr.splitlines() if ln.strip()] or ([] if done.returncode == 0 else ["bash -n failed"])


# --- engine argument parsers ----------------------------------------------------------------------------------------


def llama_server_flags() -> dict[str, int]:
    """Every flag llama-server accepts -> how many values follow it (tests/data/engine-args/llama-server-args.tsv,
    from llama.cpp common/arg.cpp). Negated forms (--no-...) take none."""
    flags: dict[str, int] = {}
    for line in (ENGINE_ARGS / "llama-server-args.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        arity, names, neg, _hint = line.split("\t")
        for name in names.split():
            flags[name] = int(arity)
        for name in neg.split():
            flags[name] = 0
    return flags


def llama_server_argv_problems(argv: list[str]) -> list[str]:
    """Walk ``argv`` (the program name first) as common/arg.cpp common_params_parse_ex does: each argument must be a
    known flag, followed by as many values as the flag takes; there are no positional arguments."""
    flags = llama_server_flags()
    out, i = [], 1
    while i < len(argv):
        a = argv[i]
        if a not in flags:
            out.append(f"{a!r}: not a llama-server flag" if a.startswith("-") else f"{a!r}: a stray positional value")
            i += 1
            continue
        n = flags[a]
        values = argv[i + 1 : i + 1 + n]
        if len(values) < n:
            out.append(f"{a} needs {n} value(s)")
        i += 1 + n
    return out


def llama_cpp_python_argv_problems(args: list[str]) -> list[str]:
    """Parse ``args`` (after ``python -m llama_cpp.server``) with the server's own parser, built as its __main__.py
    builds it (llama_cpp/server/__main__.py main: argparse + cli.add_args_from_model over Settings, then
    parse_model_from_args for ServerSettings and ModelSettings), then validate the settings as it does (pydantic). Needs llama-cpp-python[server]."""
    import argparse
    import contextlib
    import io

    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    parser = argparse.ArgumentParser(prog="llama_cpp.server", exit_on_error=False)
    add_args_from_model(parser, Settings)
    parser.add_argument("--config_file", type=str)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
        parse_model_from_args(ServerSettings, ns)
        parse_model_from_args(ModelSettings, ns)
    except (argparse.ArgumentError, SystemExit, ValueError) as e:  # pydantic's ValidationError is a ValueError
        tail = err.getvalue().strip().splitlines()[-1:]
        return [f"{type(e).__name__}: {e} {''.join(tail)}".strip()]
    return []
