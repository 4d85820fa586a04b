"""The bad-input corpus: stores, images, SimFAS and the dataset adapters (``mfas data ...`` and the Python API).

Every case asserts exit status 2 without a traceback (CLI) or the typed error (API), a message that names the
culprit, and that nothing that existed before was changed or deleted (see tests/bad_input.py). The last part
is a fuzz test of image decoding.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_input import api_error, cli_error, tree_digest
from conftest import make_samples
from mfas.data import Sample, StoreDataset, StoreWriter, open_store
from mfas.data import images as images_mod
from mfas.data.images import MAX_PIXELS, MIN_SIDE, conform, decode_image, read_header, read_image
from mfas.data.prepare import prepare
from mfas.data.synth import generate_store
from mfas.errors import ConfigError, DataError, StoreError

# ------------------------------------------------------------------------------------------- helpers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(w: int, h: int, colour: int = 0, bits: int = 8, body: bytes = b"") -> bytes:
    """A PNG whose IHDR says ``w`` x ``h``, followed by ``body`` (chunks, or nothing: a truncated file)."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, colour, 0, 0, 0)) + body


@functools.lru_cache(maxsize=1)
def png_bomb(side: int = 20_000) -> bytes:
    """A real, complete grey PNG of ``side`` x ``side`` zeros: a few hundred kB that decode to side**2 bytes."""
    z = zlib.compressobj(1)
    rows = bytes((side + 1) * 500)
    idat = b"".join(z.compress(rows) for _ in range(side // 500)) + z.flush()
    return png_header(side, side, body=_chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def jpeg_header(w: int, h: int) -> bytes:
    """SOI, an APP0 segment and a baseline SOF0 saying ``w`` x ``h`` (3 components), then nothing."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof


def bmp_header(w: int, h: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0)


def webp_header(w: int, h: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") \
        + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def tiff_header(w: int, h: int) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (277, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image(path: Path, h: int, w: int, channels: int = 3, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, channels) if channels > 1 else (h, w), value, np.uint8))
    return path


def loop(path: Path) -> Path:
    """A symbolic link that points at itself."""
    os.symlink(path.name, path)
    return path


def edit_json(store: Path, **changes) -> None:
    meta = json.loads((store / "store.json").read_text())
    meta.update(changes)
    (store / "store.json").write_text(json.dumps(meta))


def rgb_sample(sid: str = "a", size: int = 8) -> Sample:
    return Sample(sid, 1, "bonafide", "x", images={"rgb": np.zeros((size, size, 3), np.uint8)})


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A tiny ``folder`` tree: two aligned RGB + depth samples."""
    root = tmp_path / "raw"
    for cls in ("live", "print"):
        image(root / "train" / cls / "s1" / "rgb.png", 24, 20)
        image(root / "train" / cls / "s1" / "depth.png", 24, 20, channels=1)
    return root


def prep(raw: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "folder", "--root", str(raw), "--out", str(out), "--modalities", "rgb,depth",
            "--size", "16", "--workers", "1", *extra]


# ------------------------------------------------------------------------------------------ synth

@pytest.mark.parametrize("args, culprit", [
    (["--size", "0"], "size (--size) must be a whole number between 8 and 1,024, got 0"),
    (["--size", "-5"], "size (--size)"),
    (["--size", "100000"], "size (--size)"),
    (["-n", "0"], "per_domain (-n/--per-domain) must be a whole number between 1 and 1,000,000, got 0"),
    (["-n", "-3"], "per_domain"),
    (["--frames", "0"], "frames_per_video (--frames)"),
    (["--seed", "-1"], "seed (--seed)"),
    (["--workers", "-1"], "workers (--workers)"),
    (["--domains", ","], "no domain given"),
    (["--domains", "C,C"], "'C' is given twice"),
    (["--domains", "C,Q"], "unknown SimFAS domain 'Q'"),
])
def test_synth_bad_arguments(tmp_path: Path, args: list[str], culprit: str):
    out = tmp_path / "s"
    cli_error(["data", "synth", out, "-n", "2", "--workers", "1", *args], culprit, untouched=[tmp_path])
    assert not os.path.lexists(out)


def test_synth_under_an_existing_file(tmp_path: Path):
    f = write(tmp_path / "notes.txt", b"keep me")
    cli_error(["data", "synth", f / "store", "-n", "2", "--size", "16", "--workers", "1"],
              [str(f), "is a file, not a folder"], untouched=[tmp_path])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_synth_into_a_read_only_folder(tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        cli_error(["data", "synth", ro / "store", "-n", "2", "--size", "16", "--workers", "1"],
                  [str(ro), "not writable"], untouched=[ro])
    finally:
        ro.chmod(0o755)


def test_synth_into_a_folder_the_user_may_not_write(tmp_path: Path):
    """The same refusal where the tests run as root (who may write anywhere): the permission check is faked."""
    with mock.patch("mfas.data.store.os.access", return_value=False):
        cli_error(["data", "synth", tmp_path / "ro" / "store", "-n", "2", "--size", "16", "--workers", "1"],
                  [str(tmp_path), "not writable (permission denied)"], untouched=[tmp_path])


def test_synth_over_an_existing_store_without_overwrite(tiny_store: Path):
    cli_error(["data", "synth", tiny_store, "-n", "2", "--size", "16", "--workers", "1"],
              [str(tiny_store), "already exists"], untouched=[tiny_store])


def test_synth_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path: Path):
    home = tmp_path / "home"
    write(home / "thesis.tex", b"years of work")
    cli_error(["data", "synth", home, "-n", "2", "--size", "16", "--workers", "1", "--overwrite"],
              [str(home), "is not an mfas store", "thesis.tex"], untouched=[home])


def test_synth_overwrite_never_replaces_a_file(tmp_path: Path):
    f = write(tmp_path / "data.bin", b"1234")
    cli_error(["data", "synth", f, "-n", "2", "--size", "16", "--workers", "1", "--overwrite"],
              [str(f), "is a file, not a store"], untouched=[f])


def test_synth_into_a_symlink_loop(tmp_path: Path):
    out = loop(tmp_path / "s")
    cli_error(["data", "synth", out, "-n", "2", "--size", "16", "--workers", "1"],
              [str(out), "symbolic link loop"])
    assert os.path.islink(out) and not (tmp_path / "s.partial").exists()


def test_synth_into_a_broken_symlink(tmp_path: Path):
    out = tmp_path / "s"
    os.symlink(tmp_path / "elsewhere", out)
    cli_error(["data", "synth", out, "-n", "2", "--size", "16", "--workers", "1", "--overwrite"],
              [str(out), "broken symbolic link"])


def test_synth_refuses_a_partial_folder_holding_foreign_files(tmp_path: Path):
    partial = tmp_path / "s.partial"
    write(partial / "my_notes.txt", b"not a build")
    cli_error(["data", "synth", tmp_path / "s", "-n", "2", "--size", "16", "--workers", "1"],
              [str(partial), "my_notes.txt"], untouched=[partial])
    assert not (tmp_path / "s").exists()


def test_generate_store_api_checks_its_arguments(tmp_path: Path):
    api_error(lambda: generate_store(tmp_path / "s", per_domain=0), "per_domain", error=ConfigError)
    api_error(lambda: generate_store(tmp_path / "s", size=3.5), "size (--size)", error=ConfigError)
    api_error(lambda: generate_store(tmp_path / "s", per_domain=5, domains=()), "no domain", error=ConfigError)
    assert not (tmp_path / "s").exists()


def test_a_store_that_cannot_fit_on_the_disk_is_refused_before_writing(tmp_path: Path):
    import shutil

    usage = shutil.disk_usage(tmp_path)._replace(free=1000)
    with mock.patch("mfas.data.store.shutil.disk_usage", return_value=usage):
        api_error(lambda: generate_store(tmp_path / "s", per_domain=10, size=64, workers=1),
                  [str(tmp_path / "s"), "GiB are free"], untouched=[tmp_path], error=StoreError)


# ------------------------------------------------------------------------------------------ preview

@pytest.mark.parametrize("name, args, culprit", [
    ("p.png", ["--size", "0"], "size (--size)"),
    ("p.png", ["--domain", "Z"], "unknown SimFAS domain 'Z'"),
    ("p.jpg", [], "give a file name ending in .png"),
    ("p.png", ["--seed", "-2"], "seed (--seed)"),
])
def test_preview_bad_arguments(tmp_path: Path, name: str, args: list[str], culprit: str):
    cli_error(["data", "preview", tmp_path / name, "--size", "16", *args], culprit, untouched=[tmp_path])


def test_preview_into_a_folder_or_under_a_file(tmp_path: Path):
    (tmp_path / "dir.png").mkdir()
    cli_error(["data", "preview", tmp_path / "dir.png", "--size", "16"], [str(tmp_path / "dir.png"), "is a folder"],
              untouched=[tmp_path])
    f = write(tmp_path / "file", b"x")
    cli_error(["data", "preview", f / "p.png", "--size", "16"], [str(f / "p.png"), "cannot be written"],
              untouched=[tmp_path])


# ------------------------------------------------------------------------------- info, sanity, open

def test_info_on_a_symlink_loop_says_so(tmp_path: Path):
    p = loop(tmp_path / "st")
    cli_error(["data", "info", p], [str(p), "symbolic link loop"])


def test_info_on_a_file(tmp_path: Path):
    f = write(tmp_path / "x.csv", b"a,b\n")
    cli_error(["data", "info", f], [str(f), "a store is a folder"], untouched=[f])


def test_info_on_an_unfinished_build(tmp_path: Path):
    partial = tmp_path / "st.partial"
    write(partial / "rgb.npy", b"\x93NUMPY")
    cli_error(["data", "info", partial], [str(partial), "store.json is missing", "interrupted or is still running"],
              untouched=[partial])


def test_a_relabelled_manifest_is_refused_on_every_open(tiny_store: Path):
    m = tiny_store / "manifest.csv"
    text = m.read_text()
    row = next(r for r in text.splitlines()[1:] if ",0,print," in r)
    m.write_text(text.replace(row, row.replace(",0,print,", ",1,bonafide,"), 1))  # an attack made bona fide
    cli_error(["data", "info", tiny_store], [str(m), "changed since the store was built"], untouched=[tiny_store])
    api_error(lambda: open_store(tiny_store), [str(m), "manifest_sha256"], untouched=[tiny_store], error=StoreError)


def test_an_edited_store_json_is_refused(tiny_store: Path):
    meta = json.loads((tiny_store / "store.json").read_text())
    meta["counts"]["label"] = {"0": 0, "1": 12}
    (tiny_store / "store.json").write_text(json.dumps(meta))
    cli_error(["data", "info", tiny_store], [str(tiny_store / "store.json"), "changed since the store was built",
                                             "essential_sha256"], untouched=[tiny_store])


def test_a_store_without_essential_hash_is_still_read_and_its_manifest_checked(tiny_store: Path):
    meta = json.loads((tiny_store / "store.json").read_text())
    del meta["essential_sha256"]  # as written before the field existed
    (tiny_store / "store.json").write_text(json.dumps(meta))
    assert len(open_store(tiny_store)) == 12
    m = tiny_store / "manifest.csv"
    m.write_text(m.read_text().replace(",train,", ",test,", 1))
    api_error(lambda: open_store(tiny_store), "changed since the store was built", error=StoreError)


@pytest.mark.parametrize("key, value, culprit", [
    ("image_size", "abc", "image_size must be [height, width]"),
    ("image_size", [16, -16], "image_size must be [height, width]"),
    ("count", "12", "count must be a whole number"),
    ("modalities", "rgb", "modalities must be a non-empty list"),
    ("modalities", ["rgb", "rgb"], "name one twice"),
    ("arrays", [], "arrays must be a mapping"),
    ("manifest_sha256", 5, "manifest_sha256 must be a hex string"),
])
def test_store_json_of_the_wrong_shape(tiny_store: Path, key: str, value: object, culprit: str):
    edit_json(tiny_store, **{key: value})
    cli_error(["data", "info", tiny_store], [str(tiny_store / "store.json"), culprit], untouched=[tiny_store])


def test_a_truncated_store_is_refused(tiny_store: Path):
    """Arrays shorter than the manifest, even with store.json's byte count and the .npy header made to agree."""
    rgb = tiny_store / "rgb.npy"
    data = rgb.read_bytes()
    rgb.write_bytes(data[: len(data) - 5 * 16 * 16 * 3])
    api_error(lambda: open_store(tiny_store), [str(rgb), "bytes but store.json says"], untouched=[tiny_store],
              error=StoreError)
    meta = json.loads((tiny_store / "store.json").read_text())
    meta["arrays"]["rgb"]["bytes"] = rgb.stat().st_size
    (tiny_store / "store.json").write_text(json.dumps(meta))
    api_error(lambda: open_store(tiny_store), "changed since the store was built", error=StoreError)
    del meta["essential_sha256"]
    (tiny_store / "store.json").write_text(json.dumps(meta))
    api_error(lambda: open_store(tiny_store), [str(rgb), "unreadable array"], error=StoreError)


@pytest.mark.parametrize("content, culprit", [
    (b"sample_id,label\n\xff\xfe\n", "not UTF-8"),
    (b"sample_id,label\nab\x00c,1\n", "manifest.csv"),
])
def test_a_damaged_manifest_is_refused(tiny_store: Path, content: bytes, culprit: str):
    (tiny_store / "manifest.csv").write_bytes(content)
    cli_error(["data", "info", tiny_store], [str(tiny_store / "manifest.csv"), culprit], untouched=[tiny_store])


def test_info_verify_finds_changed_pixels(tiny_store: Path):
    arr = np.load(tiny_store / "depth.npy", mmap_mode="r+")
    arr[0, 0, 0] ^= 1
    arr.flush()
    del arr
    cli_error(["data", "info", tiny_store, "--verify"], [str(tiny_store / "depth.npy"), "does not match the hash"],
              untouched=[tiny_store])


def test_sanity_needs_two_domains(tmp_path: Path):
    with StoreWriter(tmp_path / "one", size=(16, 16)) as w:
        w.add_many(make_samples(6, domains=("A",)))
    cli_error(["data", "sanity", tmp_path / "one"], [str(tmp_path / "one"), "at least two domains"],
              untouched=[tmp_path / "one"])


def test_open_store_of_a_missing_store_points_at_the_previous_one(tiny_store: Path):
    old = tiny_store.with_name(tiny_store.name + ".old")
    tiny_store.rename(old)  # what a rebuild killed between its two renames leaves
    api_error(lambda: open_store(tiny_store), [str(tiny_store), "no such store", str(old)], untouched=[old],
              error=StoreError)
    # the next build of that store puts the previous one back before anything else
    api_error(lambda: StoreWriter(tiny_store, size=(16, 16)), "already exists", error=StoreError)
    assert len(open_store(tiny_store, verify=True)) == 12 and not old.exists()


# ------------------------------------------------------------------------------ StoreDataset, writer

@pytest.mark.parametrize("kwargs, culprit", [
    ({"indices": [0, 99]}, "row 99 is out of range"),
    ({"indices": [-1]}, "row -1 is out of range"),
    ({"indices": np.ones(12, bool)}, "boolean mask"),
    ({"indices": [0.5, 1.5]}, "expected whole row numbers"),
    ({"modalities": ("rgb", "thermo")}, "unknown modality 'thermo'"),
    ({"drop": ("dept",)}, "StoreDataset drop: unknown modality 'dept'"),
])
def test_store_dataset_bad_arguments(tiny_store: Path, kwargs: dict, culprit: str):
    st = open_store(tiny_store)
    api_error(lambda: StoreDataset(st, **kwargs), culprit, untouched=[tiny_store], error=ConfigError)


def test_store_dataset_given_a_path(tiny_store: Path):
    api_error(lambda: StoreDataset(tiny_store), "pass the opened store", error=ConfigError)


@pytest.mark.parametrize("size", [(0, 0), (4, 4), (8, 100_000), "big", (16,)])
def test_writer_refuses_absurd_store_sizes(tmp_path: Path, size: object):
    api_error(lambda: StoreWriter(tmp_path / "st", size=size), [str(tmp_path / "st"), "each side between 8 and 2048"],
              untouched=[tmp_path], error=StoreError)


@pytest.mark.parametrize("shape", [(0, 0, 3), (1, 1, 3), (4, 16, 3), (16,)])
def test_empty_tiny_or_flat_arrays_are_refused(tmp_path: Path, shape: tuple):
    s = Sample("a", 1, "bonafide", "x", images={"rgb": np.zeros(shape, np.uint8)})

    def build() -> None:
        with StoreWriter(tmp_path / "st", size=(16, 16), resize=True) as w:
            w.add(s)

    api_error(build, "sample 'a' (rgb)", error=DataError)
    assert not (tmp_path / "st").exists()


def test_two_writers_of_one_store_in_one_process(tmp_path: Path):
    with StoreWriter(tmp_path / "st", size=(8, 8)) as first:
        first.add(rgb_sample())
        api_error(lambda: StoreWriter(tmp_path / "st", size=(8, 8)),
                  [str(tmp_path / "st.lock"), "another build", f"pid {os.getpid()} (this process)"],
                  untouched=[tmp_path / "st.partial"], error=StoreError)
        first.add(rgb_sample("b"))
    assert len(open_store(tmp_path / "st", verify=True)) == 2
    assert not (tmp_path / "st.lock").exists()


def test_a_build_whose_folder_was_removed_meanwhile_fails_instead_of_writing_a_broken_store(tmp_path: Path):
    import shutil

    def build() -> None:
        with StoreWriter(tmp_path / "st", size=(8, 8)) as w:
            w.add(rgb_sample())
            shutil.rmtree(tmp_path / "st.partial")  # what a second build used to do to the first
            w.add(rgb_sample("b"))

    api_error(build, [str(tmp_path / "st.partial"), "removed or replaced while this build was writing"],
              error=StoreError)
    assert not (tmp_path / "st").exists() and not (tmp_path / "st.lock").exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path: Path):
    lock = write(tmp_path / "st.lock", json.dumps({"pid": 1, "host": "far-away", "started": "x"}).encode())
    api_error(lambda: StoreWriter(tmp_path / "st", size=(8, 8)), [str(lock), "far-away", "delete"],
              untouched=[lock], error=StoreError)


def test_the_lock_file_must_not_be_a_symlink(tmp_path: Path):
    victim = write(tmp_path / "victim.txt", b"do not truncate")
    os.symlink(victim, tmp_path / "st.lock")
    api_error(lambda: StoreWriter(tmp_path / "st", size=(8, 8)), [str(tmp_path / "st.lock"), "symbolic link"],
              untouched=[victim], error=StoreError)


# -------------------------------------------------------------------- two builds at once, killed builds

SLOW_BUILD = """
import sys, time
import numpy as np
from mfas.data import Sample, StoreWriter
path, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with StoreWriter(path, size=(16, 16), overwrite=True) as w:
    for i in range(n):
        w.add(Sample(f"k{i}", 1, "bonafide", "x", images={"rgb": np.full((16, 16, 3), i % 256, np.uint8)}))
        if i == 5:
            print("writing", flush=True)
        if i > 5:
            time.sleep(pause)
print("done", w.report.written, flush=True)
"""


def start_build(path: Path, n: int, pause: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(path), str(n), str(pause)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_a_second_build_of_a_store_is_refused_and_the_first_completes(tmp_path: Path):
    target = tmp_path / "st"
    first = start_build(target, 80, 0.02)
    try:
        lock = tmp_path / "st.lock"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        partial = tmp_path / "st.partial"
        cli_error(["data", "synth", target, "-n", "2", "--size", "16", "--workers", "1", "--overwrite"],
                  [str(lock), "another build", f"pid {first.pid}", "wait for it to finish"], untouched=[lock])
        api_error(lambda: generate_store(target, per_domain=2, size=16, workers=1, overwrite=True),
                  [str(lock), f"pid {first.pid}"], error=StoreError)
        assert partial.is_dir()  # the refused builds did not touch the running one's folder
    finally:
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and out.strip() == "done 80"
    st = open_store(target, verify=True)
    assert len(st) == 80 and int(st.arrays["rgb"][79, 0, 0, 0]) == 79
    assert not (tmp_path / "st.lock").exists() and not (tmp_path / "st.partial").exists()


def test_a_prepare_while_a_build_runs_is_refused(tmp_path: Path, raw: Path):
    target = tmp_path / "st"
    first = start_build(target, 60, 0.02)
    try:
        cli_error(prep(raw, target, "--overwrite"), [str(tmp_path / "st.lock"), f"pid {first.pid}"])
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0 and len(open_store(target)) == 60


def test_a_killed_build_leaves_nothing_valid_and_its_lock_is_taken_over(tmp_path: Path):
    target = tmp_path / "st"
    proc = start_build(target, 10_000, 0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists() and (tmp_path / "st.partial").is_dir() and (tmp_path / "st.lock").exists()
    cli_error(["data", "info", target], [str(target), "no such store"])
    cli_error(["data", "info", tmp_path / "st.partial"], "store.json is missing")
    with StoreWriter(target, size=(8, 8)) as w:  # the next build takes the dead one's lock over, with a note
        w.add(rgb_sample())
    assert any("stale build lock" in n and str(proc.pid) in n for n in w.report.notes)
    assert len(open_store(target, verify=True)) == 1


def test_a_killed_rebuild_keeps_the_previous_store(tiny_store: Path):
    before = tree_digest(tiny_store)
    proc = start_build(tiny_store, 10_000, 0.01)
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tree_digest(tiny_store) == before
    assert len(open_store(tiny_store, verify=True)) == 12


def test_a_stale_lock_is_taken_over_with_a_note_on_the_command_line(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write(tmp_path / "s.lock", json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}).encode())
    from typer.testing import CliRunner

    from mfas.cli.main import app

    r = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "s"), "-n", "2", "--size", "16", "--workers", "1"],
                           env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "note:" in r.output and "stale build lock" in r.output and "wrote 8 samples" in r.output
    assert not (tmp_path / "s.lock").exists()


# ------------------------------------------------------------------------------------------ prepare

def test_prepare_root_is_missing_or_a_loop(tmp_path: Path):
    cli_error(prep(tmp_path / "nope", tmp_path / "st"), ["--root", str(tmp_path / "nope"), "no such folder"])
    looped = loop(tmp_path / "looped")
    cli_error(prep(looped, tmp_path / "st"), [str(looped), "symbolic link loop"])
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("args, culprit", [
    (["--size", "0"], "--size 0: the stored image side must be a whole number between 8 and 2048"),
    (["--size", "99999"], "--size 99999"),
    (["--workers", "-2"], "--workers -2"),
])
def test_prepare_bad_common_options(tmp_path: Path, raw: Path, args: list[str], culprit: str):
    cli_error(prep(raw, tmp_path / "st", *args), culprit, untouched=[raw])
    assert not (tmp_path / "st").exists()


def test_prepare_out_is_or_contains_the_root(tmp_path: Path, raw: Path):
    cli_error(prep(raw, raw, "--overwrite"), ["--out", "is the dataset folder"], untouched=[raw])
    cli_error(prep(raw, tmp_path, "--overwrite"), ["--out", "contains the dataset folder"], untouched=[raw])


def test_prepare_overwrite_never_replaces_foreign_data(tmp_path: Path, raw: Path):
    mine = tmp_path / "photos"
    write(mine / "holiday.jpg", b"...")
    cli_error(prep(raw, mine, "--overwrite"), [str(mine), "is not an mfas store", "holiday.jpg"],
              untouched=[mine, raw])


def test_prepare_folder_refuses_unaligned_modalities(tmp_path: Path, raw: Path):
    image(raw / "train" / "live" / "s2" / "rgb.png", 48, 40)
    odd = image(raw / "train" / "live" / "s2" / "depth.png", 24, 20, channels=1)  # half the RGB's resolution
    cli_error(prep(raw, tmp_path / "strict", "--strict"), [str(odd), "modalities differ in size",
                                                            "rgb 40x48, depth 20x24", "--allow-unaligned"],
              untouched=[raw])
    assert not (tmp_path / "strict").exists()
    rep = prepare("folder", raw, tmp_path / "skip", size=16, modalities=("rgb", "depth"))
    assert rep.build.written == 2 and [s[0] for s in rep.skipped] == ["train/live/s2"]
    assert "modalities differ in size" in rep.skipped[0][2]
    rep = prepare("folder", raw, tmp_path / "resized", size=16, modalities=("rgb", "depth"), allow_unaligned=True)
    assert rep.build.written == 3 and not rep.skipped
    from typer.testing import CliRunner

    from mfas.cli.main import app

    r = CliRunner().invoke(app, prep(raw, tmp_path / "cli", "--allow-unaligned"))
    assert r.exit_code == 0 and "wrote 3 samples" in r.output, r.output


@pytest.mark.parametrize("name, data, culprit", [
    ("tiny", None, "image of 1x1 is too small: each side must be at least 8 pixels"),
    ("bomb", "bomb", "exceeds the limit of 67,108,864 pixels per image (refused before decoding)"),
    ("gif", b"GIF89a" + bytes(40), "the content is not a PNG, JPEG, BMP, TIFF or WebP image"),
    ("sixteen", "16bit", "expected an 8-bit image, got 16-bit PNG"),
])
def test_prepare_strict_names_the_bad_image(tmp_path: Path, raw: Path, name: str, data: object, culprit: str):
    bad = raw / "train" / "live" / "s3" / "rgb.png"
    if data is None:
        image(bad, 1, 1)
    elif data == "bomb":
        write(bad, png_bomb())
    elif data == "16bit":
        bad.parent.mkdir(parents=True)
        cv2.imwrite(str(bad), np.full((24, 20), 4000, np.uint16))
    else:
        write(bad, data)
    image(raw / "train" / "live" / "s3" / "depth.png", 24, 20, channels=1)
    cli_error(prep(raw, tmp_path / "st", "--strict"), [str(bad), culprit], untouched=[raw])
    assert not (tmp_path / "st").exists()
    rep = prepare("folder", raw, tmp_path / "lenient", size=16, modalities=("rgb", "depth"))
    assert rep.build.written == 2 and rep.skipped[0][1] == str(bad) and culprit in rep.skipped[0][2]


def test_prepare_api_unknown_option_and_out_under_a_file(tmp_path: Path, raw: Path):
    api_error(lambda: prepare("folder", raw, tmp_path / "st", allow_unaligend=True), "did you mean 'allow_unaligned'",
              error=ConfigError)
    f = write(tmp_path / "f", b"x")
    api_error(lambda: prepare("folder", raw, f / "st", size=16, modalities=("rgb", "depth")),
              [str(f / "st"), "is a file, not a folder"], untouched=[tmp_path], error=StoreError)


# -------------------------------------------------------------------------------------- image reading

@pytest.mark.parametrize("name, make, culprit", [
    ("one.png", lambda p: image(p, 1, 1), "image of 1x1 is too small"),
    ("thin.png", lambda p: image(p, 100, 4), "image of 4x100 is too small"),
    ("empty.jpg", lambda p: write(p, b""), "file is empty"),
    ("bomb.png", lambda p: write(p, png_bomb()), "image of 20000x20000 (400,000,000 pixels) exceeds the limit"),
    ("head.jpg", lambda p: write(p, jpeg_header(30_000, 30_000)), "refused before decoding"),
    ("head.bmp", lambda p: write(p, bmp_header(50_000, -50_000)), "image of 50000x50000"),
    ("head.webp", lambda p: write(p, webp_header(16_000, 16_000)), "exceeds the limit"),
    ("head.tif", lambda p: write(p, tiff_header(70_000, 1_000)), "exceeds the limit"),
    ("zero.png", lambda p: write(p, png_header(0, 10)), "empty image size 0x10"),
    ("short.png", lambda p: write(p, b"\x89PNG\r\n\x1a\n\x00\x00"), "the file ends inside its header"),
    ("nosof.jpg", lambda p: write(p, b"\xff\xd8\xff\xda\x00\x02"), "no frame header (SOF)"),
    ("big.tif", lambda p: write(p, b"II+\x00" + bytes(20)), "BigTIFF"),
    ("text.png", lambda p: write(p, b"hello, I am not an image"), "it starts with b'hello, I'"),
    ("folder.png", lambda p: p.mkdir(), "is not a regular file"),
    ("loop.png", loop, "symbolic link loop"),
    ("image.gif", lambda p: write(p, b"GIF89a"), "unsupported image format '.gif'"),
])
def test_read_image_refuses_with_the_file_and_the_reason(tmp_path: Path, name: str, make, culprit: str):
    p = tmp_path / name
    make(p)
    with mock.patch.object(images_mod, "_decode_bytes", side_effect=AssertionError("decoded")) as spy:
        err = api_error(lambda: read_image(p, "rgb"), [str(p), culprit], untouched=[tmp_path], error=DataError)
    assert spy.call_count == 0 and "decoded" not in str(err)  # refused before any pixel was decoded


def test_opencv_pixel_limit_becomes_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MFAS_MAX_IMAGE_PIXELS", str(4 * 10**9))  # above OpenCV's own 2**30
    p = write(tmp_path / "huge.png", png_header(50_000, 50_000, body=_chunk(b"IDAT", zlib.compress(bytes(100)))
                                               + _chunk(b"IEND", b"")))
    api_error(lambda: read_image(p, "rgb"), [str(p), "CV_IO_MAX_IMAGE_PIXELS"], error=DataError)


def test_a_bad_pixel_limit_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    p = image(tmp_path / "ok.png", 16, 16)
    monkeypatch.setenv("MFAS_MAX_IMAGE_PIXELS", "lots")
    api_error(lambda: read_image(p, "rgb"), "MFAS_MAX_IMAGE_PIXELS='lots'", error=ConfigError)


def test_a_file_too_large_for_the_limit_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MFAS_MAX_IMAGE_PIXELS", "4096")
    p = tmp_path / "big.bmp"
    with open(p, "wb") as f:
        f.write(bmp_header(32, 32))
        f.truncate(4 * 4096 + (16 << 20) + 1)
    with mock.patch.object(np, "fromfile", side_effect=AssertionError("read")):
        api_error(lambda: read_image(p, "rgb"), [str(p), "larger than any image within the limit"], error=DataError)


def test_limits_are_what_the_docs_say():
    assert MAX_PIXELS == 8192 * 8192 and MIN_SIDE == 8
    assert images_mod.max_file_bytes() == 4 * 8192 * 8192 + (16 << 20)


def test_small_valid_images_of_every_format_still_read(tmp_path: Path):
    for ext in (".png", ".jpg", ".bmp", ".tif", ".webp"):
        p = image(tmp_path / f"ok{ext}", 9, 8)
        assert read_image(p, "rgb").shape == (9, 8, 3), ext
    assert conform(np.zeros((8, 8), np.uint8), "depth").shape == (8, 8)


# ------------------------------------------------------------------------------------------- fuzzing

def _encoded() -> list[bytes]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = []
    for ext, params in ((".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
                        (".tif", []), (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])):
        ok, buf = cv2.imencode(ext, img, params)
        assert ok
        out.append(buf.tobytes())
    return out


ENCODED = _encoded()
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"II*\x00", b"MM\x00*", b""]
HEADERS = [png_header, jpeg_header, bmp_header, webp_header, tiff_header]
FUZZ_LIMIT = 64 * 64  # a low limit, so that an image decoded above it would be seen

inputs = st.one_of(
    st.builds(lambda m, b: m + b, st.sampled_from(MAGIC), st.binary(max_size=512)),  # noise behind a magic
    st.builds(lambda e, k: e[: k % (len(e) + 1)], st.sampled_from(ENCODED), st.integers(0, 10**6)),  # truncated
    st.builds(lambda e, k, v: e[:k % len(e)] + bytes([v]) + e[k % len(e) + 1:],  # one byte changed
              st.sampled_from(ENCODED), st.integers(0, 10**6), st.integers(0, 255)),
    st.builds(lambda f, w, h, tail: f(w, h) + tail, st.sampled_from(HEADERS), st.integers(1, 0xFFFF),
              st.integers(1, 0xFFFF), st.binary(max_size=64)),  # a valid header with any size
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs)
def test_fuzz_decoding_gives_an_image_or_a_data_error_naming_the_file(data: bytes):
    real = images_mod._decode_bytes
    decoded: list[tuple] = []

    def watched(raw: np.ndarray):
        head = read_header(raw, "fuzz")
        assert head.width * head.height <= FUZZ_LIMIT, "decoding an image whose header is above the limit"
        img = real(raw)
        if img is not None:
            decoded.append(img.shape)
            assert img.shape[0] * img.shape[1] <= FUZZ_LIMIT, f"decoded {img.shape} above the limit"
        return img

    with tempfile.TemporaryDirectory() as d, mock.patch.dict(os.environ, {"MFAS_MAX_IMAGE_PIXELS": str(FUZZ_LIMIT)}), \
            mock.patch.object(images_mod, "_decode_bytes", watched):
        p = Path(d) / "fuzz.png"
        p.write_bytes(data)
        try:
            img = read_image(p, "rgb")
        except DataError as e:
            assert str(p) in str(e) and e.reason
        else:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            assert MIN_SIDE <= min(img.shape[:2]) and img.shape[0] * img.shape[1] <= FUZZ_LIMIT
        try:
            decode_image(data, "bytes-in-memory")
        except DataError as e:
            assert "bytes-in-memory" in str(e)
