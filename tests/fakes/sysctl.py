"""Fake macOS ``sysctl`` answering from a recorded ``key: value`` dump named by $SYSCTL_RECORDING.

Behaviour copied from apple-oss-distributions/system_cmds:sysctl/sysctl.c (`main`, `parse`, `show_var`):
``KEY...`` prints "KEY: value" per key; a node name prints every leaf below it; ``-n`` prints values only; ``-e``
uses "=" as separator; ``-a`` prints everything; ``-i`` skips unknown keys silently; otherwise an unknown key writes
"sysctl: unknown oid 'KEY'" to stderr, the rest still print, and the exit status is the number of misses.
Each call's argv is appended to $SYSCTL_LOG when set, so tests can count calls.
"""

import os
import sys


def load(path):
    data = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            key, sep, value = line.rstrip("\n").partition(":")
            if sep:
                data.append((key.strip(), value.strip()))
    return data


def main(argv):
    if os.environ.get("SYSCTL_LOG"):
        with open(os.environ["SYSCTL_LOG"], "a", encoding="utf-8") as log:
            log.write(" ".join(argv) + "\n")
    flags, names = set(), []
    for arg in argv:
        if arg.startswith("-") and len(arg) > 1:
            flags.update(arg[1:])
        else:
            names.append(arg)
    if not names and "a" not in flags:
        sys.stderr.write("usage: sysctl [-bdehiNnoqx] name[=value] ...\n       sysctl [-bdehNnoqx] -a\n")
        return 1
    data = load(os.environ["SYSCTL_RECORDING"])
    sep = "=" if "e" in flags else ": "

    def show(key, value):
        sys.stdout.write(f"{value}\n" if "n" in flags else f"{key}{sep}{value}\n")

    if not names:
        for key, value in data:
            show(key, value)
        return 0
    misses = 0
    for name in names:
        rows = [(k, v) for k, v in data if k == name] or [(k, v) for k, v in data if k.startswith(name + ".")]
        if rows:
            for key, value in rows:
                show(key, value)
        elif "i" not in flags:
            sys.stderr.write(f"sysctl: unknown oid '{name}'\n")
            misses += 1
    return misses


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
