"""read_toml's JSON cache: the same table as tomllib gives, refreshed when the file changes, ignored when damaged."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from advisor.strict import _cache_key, read_toml


def test_cache_gives_tomllibs_table_and_follows_the_file(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text('a = 1\n[t]\nb = "two"\nc = [1.5, 2]\n')
    first = read_toml(f)
    st = f.stat()
    assert _cache_key(f, st.st_size, st.st_mtime_ns).is_file()
    assert read_toml(f) == first == tomllib.loads(f.read_text())
    f.write_text('a = 2\n')
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert read_toml(f) == {"a": 2}


def test_damaged_cache_is_ignored_and_dates_are_not_cached(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text("a = 1\n")
    read_toml(f)
    st = f.stat()
    _cache_key(f, st.st_size, st.st_mtime_ns).write_text("{not json")
    assert read_toml(f) == {"a": 1}
    d = tmp_path / "d.toml"
    d.write_text("when = 2025-07-01\n")
    read_toml(d)
    st = d.stat()
    assert not _cache_key(d, st.st_size, st.st_mtime_ns).exists()
    assert read_toml(d) == tomllib.loads(d.read_text())
