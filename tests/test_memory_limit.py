"""The benchmarks' memory-limit helper, on cgroup trees emulated in a temporary folder (v1 and v2 layouts)."""

import os

import pytest

from benchmarks.memory_limit import LimitUnavailable, MemoryLimit

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def test_v1_limit_written_and_counters_read(tmp_path):
    (tmp_path / "memory").mkdir()
    with MemoryLimit(500, root=tmp_path, drop_page_cache=False) as limit:
        d = limit.dir
        assert d.parent == tmp_path / "memory" and d.name.startswith("cse-bench-")
        assert (d / "memory.limit_in_bytes").read_text() == str(500 * 1024 * 1024)
        limit.enter()  # the caller's pid stands in for the forked child's
        assert (d / "cgroup.procs").read_text() == str(os.getpid())
        (d / "memory.max_usage_in_bytes").write_text("734003200\n")  # 700 MiB
        (d / "memory.failcnt").write_text("3\n")
        (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
        assert limit.report() == {
            "limit_mib": 500,
            "cgroup": "v1",
            "max_usage_mib": 700.0,
            "hit_limit_times": 3,
            "oom_kills": 1,
            "page_cache_dropped": False,
        }


def test_v2_limit_written_and_counters_read(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    with MemoryLimit(1000, root=tmp_path, drop_page_cache=False) as limit:
        d = limit.dir
        assert d.parent == tmp_path
        assert (d / "memory.max").read_text() == str(1000 * 2**20)
        (d / "memory.peak").write_text(str(1000 * 2**20 - 2**19))
        (d / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 0\noom_kill 0\n")
        assert limit.report() == {
            "limit_mib": 1000,
            "cgroup": "v2",
            "max_usage_mib": 999.5,
            "hit_limit_times": 12,
            "oom_kills": 0,
            "page_cache_dropped": False,
        }


def test_missing_or_malformed_counters_read_as_unknown(tmp_path):
    (tmp_path / "memory").mkdir()
    with MemoryLimit(64, root=tmp_path, drop_page_cache=False) as limit:
        (limit.dir / "memory.max_usage_in_bytes").write_text("not a number")
        (limit.dir / "memory.oom_control").write_text("oom_kill one\n")
        report = limit.report()
    assert (report["max_usage_mib"], report["hit_limit_times"], report["oom_kills"]) == (None, None, None)


def test_an_unwritable_tree_fails_with_a_clear_message(tmp_path):
    with (
        pytest.raises(LimitUnavailable, match="cannot make a memory cgroup under .*; run as root"),
        MemoryLimit(500, root=tmp_path / "no-such-tree", drop_page_cache=False),
    ):
        pass


@pytest.mark.parametrize("bad", [0, -5])
def test_a_limit_must_be_positive(tmp_path, bad):
    with pytest.raises(ValueError, match="positive"):
        MemoryLimit(bad, root=tmp_path)


def test_an_empty_cgroup_is_removed_on_exit(tmp_path):
    (tmp_path / "memory").mkdir()
    limit = MemoryLimit(64, root=tmp_path, drop_page_cache=False)
    with limit:
        (limit.dir / "memory.limit_in_bytes").unlink()  # a real cgroup's files vanish with its folder
    assert not limit.dir.exists()
