"""The dataset cache (recbench/data/base.py): a checksum manifest in meta.json, verified on load; a
corrupt, partial or legacy cache folder is reported in one warning line and rebuilt (swapped in
atomically) with identical arrays; a writer killed mid-build leaves nothing that loads as complete.

Built on the hand-written KuaiComt files (one array.<name>.npy per array + two parquet side tables +
meta.json)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from recbench.data import base
from recbench.data.kuaicomt import KuaiComtAdapter
from recbench.records import temp_prefix
from tests import test_kuaicomt_adapter as comt

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def built(tmp_path):
    """(adapter factory, first Prepared, cache folder) after one build."""
    raw = comt.write_files(tmp_path / "raw")
    make = lambda **kw: comt.adapter(raw, tmp_path, **kw)
    prepared = make().prepare()
    folder = tmp_path / "cache" / prepared.meta["fingerprint"]
    return make, prepared, folder


def count_builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = KuaiComtAdapter.build

    def build(self, raw_dir):
        calls.append(1)
        return original(self, raw_dir)

    monkeypatch.setattr(KuaiComtAdapter, "build", build)
    return calls


def assert_same(a, b) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for key in a.arrays:
        assert a.arrays[key].dtype == b.arrays[key].dtype, key
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)
    assert sorted(a.frames) == sorted(b.frames)
    for key in a.frames:
        assert a.frames[key].equals(b.frames[key]), key
    assert a.meta == b.meta


def test_manifest_lists_every_file_and_is_verified_on_reload(built, monkeypatch):
    make, first, folder = built
    arrays = sorted(f"{base.ARRAY_PREFIX}{name}.npy" for name in first.arrays)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*arrays, "comment_text.parquet", "meta.json",
                                                               "video_text.parquet"])
    manifest = json.loads((folder / "meta.json").read_text())[base.MANIFEST_KEY]
    assert sorted(manifest["files"]) == sorted([*arrays, "comment_text.parquet", "video_text.parquet"])
    for name, entry in manifest["files"].items():
        assert entry["size"] == (folder / name).stat().st_size
        assert entry["checksum"] == base.file_checksum(folder / name, manifest["algorithm"])
    assert base.MANIFEST_KEY not in first.meta  # the manifest stays in the folder, not in records
    assert base.verify_cache(folder)[1] is None
    builds = count_builds(monkeypatch)
    again = make().prepare()
    assert builds == [] and oct(folder.stat().st_mode)[-3:] == "755"
    assert_same(first, again)


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_meta(path: Path) -> None:  # still valid json, one number changed
    meta = json.loads(path.read_text())
    meta["long_view_threshold_s"] += 1.0
    path.write_text(json.dumps(meta))


def drop_manifest(path: Path) -> None:  # a cache written before manifests existed
    meta = json.loads(path.read_text())
    del meta[base.MANIFEST_KEY]
    path.write_text(json.dumps(meta))


def add_parquet(path: Path) -> None:
    (path.parent / "stray.parquet").write_bytes((path.parent / "video_text.parquet").read_bytes())


ARRAY_FILE = "array.train_label_staytime.npy"  # one of the memory-mapped arrays

CORRUPTIONS = {
    # name: (file, damage, fragment of the warning)
    "array_flipped_byte": (ARRAY_FILE, flip_byte, f"{ARRAY_FILE}: checksum mismatch"),
    "array_truncated": (ARRAY_FILE, truncate, f"{ARRAY_FILE}: "),
    "array_deleted": (ARRAY_FILE, Path.unlink, f"{ARRAY_FILE}: missing"),
    "parquet_deleted": ("video_text.parquet", Path.unlink, "video_text.parquet: missing"),
    "parquet_flipped_byte": ("comment_text.parquet", flip_byte, "comment_text.parquet: checksum mismatch"),
    "meta_truncated": ("meta.json", truncate, "meta.json: unreadable or truncated"),
    "meta_deleted": ("meta.json", Path.unlink, "meta.json: missing"),
    "meta_edited": ("meta.json", edit_meta, "meta.json: checksum mismatch"),
    "no_manifest": ("meta.json", drop_manifest, "meta.json: no checksum manifest"),
    "stray_parquet": ("meta.json", add_parquet, "stray.parquet: not in the manifest"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_cache_warns_once_and_is_rebuilt(built, monkeypatch, capfd, name):
    make, first, folder = built
    file, damage, fragment = CORRUPTIONS[name]
    damage(folder / file)
    assert base.verify_cache(folder)[1] is not None
    capfd.readouterr()
    builds = count_builds(monkeypatch)
    rebuilt = make().prepare()
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("recbench: warning:")]
    assert warnings == [f"recbench: warning: cache {folder} is corrupt ({warnings[0].split('(', 1)[1]}"], err
    assert fragment in warnings[0] and warnings[0].endswith("; rebuilding")
    assert builds == [1]
    assert_same(first, rebuilt)
    # the bad folder was replaced atomically: one intact folder, no temp or old copy beside it
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    assert base.verify_cache(folder)[1] is None and not (folder / "stray.parquet").exists()
    # ... and the next run loads it quietly
    capfd.readouterr()
    assert_same(first, make().prepare())
    assert builds == [1] and "warning" not in capfd.readouterr().err


def rewrite_manifest(folder: Path) -> None:
    """Make the manifest vouch for the folder as it is now (damage the checksums cannot see)."""
    meta = json.loads((folder / "meta.json").read_text())
    meta[base.MANIFEST_KEY] = base._manifest(folder, {k: v for k, v in meta.items() if k != base.MANIFEST_KEY})
    (folder / "meta.json").write_text(json.dumps(meta))


def test_unreadable_array_with_matching_manifest_is_rebuilt(built, monkeypatch, capfd):
    """A file the manifest vouches for but numpy cannot read (written broken) is still caught."""
    make, first, folder = built
    (folder / ARRAY_FILE).write_bytes(b"not an npy file")
    rewrite_manifest(folder)
    builds = count_builds(monkeypatch)
    assert_same(first, make().prepare())
    assert builds == [1] and "unreadable" in capfd.readouterr().err


def test_arrays_load_memory_mapped_and_writable(built):
    make, first, folder = built
    loaded = make().prepare()
    staytime = loaded.arrays["train_label_staytime"]
    assert isinstance(staytime, np.memmap) and staytime.flags.writeable  # copy-on-write: torch can wrap it
    staytime[0] += 1  # a write stays in this process: the file is untouched
    assert base.verify_cache(folder)[1] is None


def test_a_cache_in_the_older_single_npz_layout_still_loads(built, monkeypatch):
    make, first, folder = built
    arrays = {p.name[len(base.ARRAY_PREFIX):-4]: np.load(p) for p in folder.glob(f"{base.ARRAY_PREFIX}*.npy")}
    np.savez(folder / "arrays.npz", **arrays)
    for path in folder.glob(f"{base.ARRAY_PREFIX}*.npy"):
        path.unlink()
    rewrite_manifest(folder)
    builds = count_builds(monkeypatch)
    assert_same(first, make().prepare())
    assert builds == []


def test_sha256_manifest_is_verified_too(built, monkeypatch, capfd):
    """Without the xxhash package the manifest uses sha256; either kind is checked on load."""
    _, _, folder = built
    monkeypatch.setattr(base, "_checksum_algorithm", lambda: "sha256")
    meta = json.loads((folder / "meta.json").read_text())
    meta[base.MANIFEST_KEY] = base._manifest(folder, {k: v for k, v in meta.items() if k != base.MANIFEST_KEY})
    assert meta[base.MANIFEST_KEY]["algorithm"] == "sha256"
    (folder / "meta.json").write_text(json.dumps(meta))
    assert base.verify_cache(folder)[1] is None
    flip_byte(folder / ARRAY_FILE, 0.9)
    assert base.verify_cache(folder)[1] == f"{ARRAY_FILE}: checksum mismatch"


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from recbench.data import base
    from tests import test_kuaicomt_adapter as comt

    tmp = Path(sys.argv[1])
    real_save = np.save

    def save_then_die(path, array, **kwargs):  # the first array is half written when the process is killed
        real_save(path, array, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        os.kill(os.getpid(), signal.SIGKILL)

    base.np.save = save_then_die
    comt.adapter(tmp / "raw", tmp).prepare()
""")


def test_writer_killed_mid_build_leaves_no_complete_cache(tmp_path, monkeypatch, capfd):
    comt.write_files(tmp_path / "raw")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    cache = tmp_path / "cache"
    leftovers = list(cache.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith("."), leftovers  # only a hidden temp folder
    assert not (leftovers[0] / "meta.json").exists()
    fingerprint = comt.adapter(tmp_path / "raw", tmp_path).fingerprint(tmp_path / "raw")
    assert not (cache / fingerprint).exists()
    # the next run builds from scratch (nothing loads as complete), and its start removes the killed
    # writer's temp folder (its name carries the writer's host and pid, and that process is gone) ...
    live_temp = Path(tempfile.mkdtemp(prefix=temp_prefix(fingerprint), dir=cache))  # a live writer's (this process)
    builds = count_builds(monkeypatch)
    prepared = comt.adapter(tmp_path / "raw", tmp_path).prepare()
    assert builds == [1] and "warning" not in capfd.readouterr().err
    assert base.verify_cache(cache / fingerprint)[1] is None
    assert_same(prepared, comt.adapter(tmp_path / "raw", tmp_path / "fresh").prepare())
    assert sorted(p.name for p in cache.iterdir()) == sorted([fingerprint, live_temp.name])  # ... not a live one


def test_concurrent_finisher_keeps_the_intact_folder(built):
    """A second writer with the same fingerprint finds an intact folder and keeps it."""
    _, first, folder = built
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    base._save_atomic(first, folder)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
