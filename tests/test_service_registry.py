"""ModelRegistry: layout, versions, the per-process cache, atomic writes, names that cannot escape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import minigrad
from minigrad import Linear, Sequential, Sigmoid, Tanh, Tensor, no_grad
from service.registry import (
    ChangeToken,
    InvalidModelFile,
    InvalidModelName,
    ModelNameTaken,
    ModelNotFound,
    ModelRegistry,
    VersionNotFound,
)


def small_model(seed: int, n_in: int = 2, dtype=np.float64) -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential([Linear(n_in, 3, rng=rng, dtype=dtype), Tanh(), Linear(3, 1, rng=rng, dtype=dtype), Sigmoid()])


def document(seed: int, **kwargs) -> dict:
    return json.loads(minigrad.dumps(small_model(seed, **kwargs)))


@pytest.fixture
def registry(model_dir) -> ModelRegistry:
    # Looks at the disk on every lookup, so that these tests see each change by hand at once; the reuse
    # of lookups between rechecks (the default) has its own tests at the end.
    return ModelRegistry(model_dir, recheck_seconds=0)


def test_hand_placed_files_are_version_1(registry):
    assert registry.names() == ["iris", "xor"]
    assert registry.versions("xor") == [1]
    loaded = registry.get("xor")
    assert (loaded.name, loaded.version, loaded.n_inputs, loaded.n_outputs) == ("xor", 1, 2, 1)
    assert loaded.dtype == np.float64
    assert loaded.summary["layers"] == ["Linear(2->3)", "Tanh", "Linear(3->1)", "Sigmoid"]


def test_put_adds_versions_and_get_defaults_to_the_latest(registry, model_dir):
    assert registry.put("xor", document(1)).version == 2
    assert registry.put("xor", document(2)).version == 3
    assert registry.versions("xor") == [1, 2, 3]
    assert registry.get("xor").version == 3
    assert registry.get("xor", 2).document == document(1)
    assert sorted(os.listdir(model_dir / "xor")) == ["2.json", "3.json"]  # no temporary files left


def test_put_creates_a_new_model(registry, model_dir):
    loaded = registry.put("fresh-model_1.0", document(3))
    assert loaded.version == 1
    assert "fresh-model_1.0" in registry.names()
    assert (model_dir / "fresh-model_1.0" / "1.json").is_file()


def test_versioned_file_wins_over_hand_placed_one(registry, model_dir):
    (model_dir / "xor").mkdir()
    (model_dir / "xor" / "1.json").write_text(minigrad.dumps(small_model(5)))
    assert registry.versions("xor") == [1]
    assert registry.get("xor").document == document(5)


def test_predict_is_the_forward_pass_bit_for_bit(registry):
    loaded = registry.get("iris")
    x = np.random.default_rng(0).normal(size=(17, 4))
    with no_grad():
        expected = minigrad.load(registry.directory + "/iris.json")(Tensor(x)).data
    assert np.array_equal(loaded.predict(x), expected)


def test_unchanged_files_are_not_parsed_again(registry):
    assert registry.get("xor") is registry.get("xor")


def test_a_file_replaced_by_hand_is_reloaded(registry, model_dir):
    before = registry.get("xor")
    minigrad.save(small_model(9), model_dir / "xor.json")  # atomic replace: a new inode
    after = registry.get("xor")
    assert after is not before
    assert after.document == document(9)


def test_models_placed_or_removed_by_hand_are_seen_at_once(registry, model_dir):
    minigrad.save(small_model(4), model_dir / "new.json")
    assert registry.get("new").version == 1
    os.unlink(model_dir / "new.json")
    with pytest.raises(ModelNotFound):
        registry.get("new")


def test_delete_removes_every_version(registry, model_dir):
    registry.put("xor", document(1))
    assert registry.delete("xor") == [1, 2]
    assert registry.names() == ["iris"]
    assert not (model_dir / "xor").exists() and not (model_dir / "xor.json").exists()
    assert [entry for entry in os.listdir(model_dir) if entry.startswith(".")] == [ChangeToken.FILE]
    with pytest.raises(ModelNotFound):
        registry.get("xor")
    with pytest.raises(ModelNotFound):
        registry.delete("xor")


def test_unknown_model_and_version(registry):
    with pytest.raises(ModelNotFound, match="'nope'"):
        registry.get("nope")
    with pytest.raises(VersionNotFound, match="no version 7; available: 1"):
        registry.get("xor", 7)


@pytest.mark.parametrize("name", [
    "", ".", "..", "../etc", "a/b", "a\\b", "a..b", ".hidden", "-dash", "_under", "a b", "a\x00b", "ümlaut",
    "x" * 65, "x" * 300, None, 3,
    "xor\n", "a\n",  # the pattern's "$" matches before a final newline: these were valid names
])
def test_names_that_could_leave_the_directory_are_refused(registry, model_dir, name):
    before = sorted(os.listdir(model_dir))
    with pytest.raises(InvalidModelName):
        registry.get(name)
    with pytest.raises(InvalidModelName):
        registry.put(name, document(1))
    with pytest.raises(InvalidModelName):
        registry.delete(name)
    assert sorted(os.listdir(model_dir)) == before


def test_an_invalid_document_is_refused_and_leaves_nothing(registry, model_dir):
    before = sorted(os.listdir(model_dir))
    bad = document(1)
    bad["layers"][0]["weight"] = [[1.0, 2.0]]
    with pytest.raises(minigrad.ModelFormatError, match=r"layers\[0\]\.weight"):
        registry.put("xor", bad)
    with pytest.raises(minigrad.ModelFormatError):
        registry.put("other", {"format": "something else"})
    assert registry.versions("xor") == [1]
    assert sorted(os.listdir(model_dir)) == before


def test_a_broken_file_placed_by_hand_names_itself(registry, model_dir):
    (model_dir / "broken.json").write_text('{"format": "minigrad.sequential", "layers": [')
    with pytest.raises(InvalidModelFile, match="broken.json"):
        registry.get("broken")


def test_a_deeply_nested_file_placed_by_hand_is_invalid_not_a_crash(registry, model_dir):
    (model_dir / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidModelFile, match="deep.json"):
        registry.get("deep")


def test_models_deleted_elsewhere_leave_the_cache(model_dir):
    mine, other = ModelRegistry(model_dir), ModelRegistry(model_dir)
    mine.get("xor")
    other.delete("xor")
    mine.get("iris")  # the next load drops what is gone
    assert [path for path in mine._cache if "xor" in path] == []


def test_concurrent_puts_get_distinct_versions(model_dir):
    # Separate registries stand in for separate gunicorn workers sharing one directory.
    registries = [ModelRegistry(model_dir) for _ in range(8)]
    versions = []

    def upload(registry, seed):
        versions.append(registry.put("race", document(seed)).version)

    threads = [threading.Thread(target=upload, args=(r, i)) for i, r in enumerate(registries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(1, 9))
    assert registries[0].versions("race") == list(range(1, 9))


def test_an_upload_whose_directory_a_delete_takes_away_is_stored_all_the_same(model_dir, monkeypatch):
    """A delete of the same name (another worker) between the upload's steps used to be a ModelStorageError
    (a 503 "not writable") although nothing was wrong with the disk: the upload starts over instead."""
    uploader, deleter = ModelRegistry(model_dir), ModelRegistry(model_dir)
    uploader.put("churn", document(1))
    link = ModelRegistry._link_next_version
    deletions = []

    def delete_first(self, name, base, temporary):
        if not deletions:
            deletions.append(deleter.delete(name))  # takes <name>/, and the upload's temporary file, away
        return link(self, name, base, temporary)

    monkeypatch.setattr(ModelRegistry, "_link_next_version", delete_first)
    loaded = uploader.put("churn", document(2))
    assert deletions == [[1]]
    assert (loaded.version, deleter.versions("churn")) == (1, [1])
    assert deleter.get("churn").document == document(2)
    assert os.listdir(model_dir / "churn") == ["1.json"]


def test_uploads_and_deletes_of_one_name_at_once_never_fail(model_dir):
    registries = [ModelRegistry(model_dir) for _ in range(6)]
    failures = []

    def churn(registry, seed):
        for step in range(15):
            try:
                if (seed + step) % 3 == 0:
                    registry.delete("churn")
                else:
                    assert registry.put("churn", document(seed)).n_inputs == 2
            except ModelNotFound:
                pass  # a delete after another delete
            except Exception as error:
                failures.append(error)

    threads = [threading.Thread(target=churn, args=(r, i)) for i, r in enumerate(registries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_name_whose_place_a_hand_placed_file_holds_is_refused(registry, model_dir):
    before = (model_dir / "xor.json").read_bytes()
    with pytest.raises(ModelNameTaken, match="hand-placed file of model 'xor'"):
        registry.put("xor.json", document(1))
    assert (model_dir / "xor.json").read_bytes() == before
    assert registry.get("xor").version == 1


def test_readers_never_see_a_partial_file(model_dir):
    """While one thread uploads versions, another keeps reading the latest: every read is a whole model."""
    writer, reader = ModelRegistry(model_dir), ModelRegistry(model_dir)
    big = json.loads(minigrad.dumps(small_model(1, n_in=300)))
    done = threading.Event()
    failures = []

    def read_continuously():
        while not done.is_set():
            try:
                loaded = reader.get("big")
                assert loaded.n_inputs == 300
            except ModelNotFound:
                pass
            except Exception as error:  # an InvalidModelFile would mean a torn read
                failures.append(error)

    thread = threading.Thread(target=read_continuously)
    thread.start()
    for _ in range(15):
        writer.put("big", big)
    done.set()
    thread.join()
    assert failures == []


def test_one_registry_shared_by_threads_while_models_come_and_go(model_dir):
    """gthread workers share one registry between threads: lookups during uploads and deletions see a
    whole model or a clean not-found, never a crash of the cache."""
    registry = ModelRegistry(model_dir)
    stop = threading.Event()
    failures = []

    def read():
        while not stop.is_set():
            for name in ("xor", "iris", "churn"):
                try:
                    loaded = registry.get(name)
                    assert loaded.predict(np.zeros((1, loaded.n_inputs))).shape == (1, loaded.n_outputs)
                except (ModelNotFound, VersionNotFound):
                    pass
                except Exception as error:
                    failures.append(error)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for thread in readers:
        thread.start()
    for seed in range(20):
        registry.put("churn", document(seed))
        if seed % 3 == 2:
            registry.delete("churn")
    stop.set()
    for thread in readers:
        thread.join()
    assert failures == []


def test_float32_models_keep_their_dtype(registry):
    loaded = registry.put("f32", document(2, dtype=np.float32))
    assert loaded.dtype == np.float32
    x = np.array([[0.5, -1.0]], dtype=np.float32)
    assert loaded.predict(x).dtype == np.float32


def _settle(path, seconds_ago=10):
    """Age a directory's mtime, as if its last change were long past (listings are reused only then)."""
    then = time.time() - seconds_ago
    os.utime(path, (then, then))


def test_a_settled_directory_is_not_listed_again_until_it_changes(registry, model_dir, monkeypatch):
    registry.put("xor", document(1))  # xor/2.json beside the hand-placed xor.json
    _settle(model_dir / "xor")
    listings = []
    listed = ModelRegistry._version_paths
    monkeypatch.setattr(ModelRegistry, "_version_paths", lambda self, name: listings.append(name) or listed(self, name))
    assert [registry.get("xor").version for _ in range(5)] == [2] * 5
    assert listings == ["xor"]  # once; then a stat of xor/ says the listing holds
    minigrad.save(small_model(6), model_dir / "xor" / "3.json")  # by hand, in the settled directory
    assert registry.get("xor").document == document(6)
    os.unlink(model_dir / "xor" / "3.json")
    assert registry.get("xor").version == 2
    with pytest.raises(VersionNotFound, match="no version 3"):
        registry.get("xor", 3)
    assert registry.get("xor", 1).version == 1


def test_a_settled_hand_placed_file_removed_is_gone_at_once(registry, model_dir):
    assert registry.get("xor").version == 1
    os.unlink(model_dir / "xor.json")
    with pytest.raises(ModelNotFound):
        registry.get("xor")


# ---------------------------------------------------------------------- reusing lookups between rechecks


def test_a_lookup_is_reused_without_touching_the_disk_until_the_recheck_time(model_dir, monkeypatch):
    registry = ModelRegistry(model_dir, recheck_seconds=60)
    first = registry.get("xor")
    calls = []
    for name in ("stat", "listdir", "scandir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *args, real=real, name=name, **kwargs: calls.append(name) or real(*args))
    assert all(registry.get("xor") is first for _ in range(100))
    assert calls == []  # a stat lets other threads take the GIL: under load that was a tenth of a prediction


def test_changes_through_another_registry_are_seen_at_once(model_dir):
    # Two registries of one directory stand for two gunicorn workers (or a worker and a job consumer).
    reader, writer = ModelRegistry(model_dir, recheck_seconds=60), ModelRegistry(model_dir, recheck_seconds=60)
    assert reader.get("xor").version == 1
    writer.put("xor", document(5))
    assert reader.get("xor").version == 2 and reader.get("xor").document == document(5)
    writer.delete("xor")
    with pytest.raises(ModelNotFound):
        reader.get("xor")


def test_a_put_in_another_process_is_seen_at_once(model_dir):
    reader = ModelRegistry(model_dir, recheck_seconds=60)
    assert reader.get("xor").version == 1
    script = ("import json, sys\nfrom service.registry import ModelRegistry\n"
              "ModelRegistry(sys.argv[1]).put('xor', json.loads(sys.stdin.read()))\n")
    subprocess.run([sys.executable, "-c", script, str(model_dir)], input=json.dumps(document(6)), text=True,
                   check=True, timeout=60)
    assert reader.get("xor").version == 2 and reader.get("xor").document == document(6)


@pytest.mark.parametrize("marker_usable", [True, False])
def test_a_change_by_hand_is_seen_within_the_recheck_time(model_dir, marker_usable):
    if not marker_usable:  # as in a read-only directory: the marker file cannot be opened for writing
        (model_dir / ChangeToken.FILE).mkdir()
    registry = ModelRegistry(model_dir, recheck_seconds=0.3)
    before = registry.get("xor")
    minigrad.save(small_model(7), model_dir / "xor.json")  # by hand: no registry knows
    started = time.monotonic()
    while registry.get("xor") is before:
        assert time.monotonic() - started < 5, "the file replaced by hand was never seen"
        time.sleep(0.02)
    assert registry.get("xor").document == document(7)
    (model_dir / "new.json").write_text(json.dumps(document(8)))
    with pytest.raises(ModelNotFound):  # a model never looked up is looked for on disk at once
        registry.get("newer")
    assert registry.get("new").document == document(8)


def test_a_removed_change_marker_is_made_again_and_changes_are_seen_at_once_again(model_dir):
    reader, writer = ModelRegistry(model_dir, recheck_seconds=0.3), ModelRegistry(model_dir, recheck_seconds=0.3)
    assert reader.get("xor").version == 1
    os.unlink(model_dir / ChangeToken.FILE)  # e.g. `git clean -X` of a checkout's models/
    writer.put("xor", document(2))  # makes a new marker; the reader still maps the removed one
    started = time.monotonic()
    while reader.get("xor").version != 2:  # seen at its next look at the disk, which maps the new one
        assert time.monotonic() - started < 5, "the upload was never seen"
        time.sleep(0.02)
    writer.put("xor", document(3))
    assert reader.get("xor").version == 3  # at once again: both map the same marker


def test_a_change_marker_cut_short_is_mended_before_anyone_reads_past_its_end(model_dir):
    # A mapping read past the end of its file kills the process (SIGBUS): any registry that opens the
    # marker puts its bytes back, so the readers already running never read past the end. In a child
    # process, so that a failure is a test failure and not the end of the test run.
    script = ("import json, os, sys\nfrom service.registry import ChangeToken, ModelRegistry\n"
              "reader = ModelRegistry(sys.argv[1], recheck_seconds=60)\nassert reader.get('xor').version == 1\n"
              "open(os.path.join(sys.argv[1], ChangeToken.FILE), 'w').close()\n"  # cut to 0 bytes
              "ModelRegistry(sys.argv[1]).put('xor', json.loads(sys.stdin.read()))\n"
              "print(reader.get('xor').version)\n")
    done = subprocess.run([sys.executable, "-c", script, str(model_dir)], input=json.dumps(document(4)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2"
    assert (model_dir / ChangeToken.FILE).stat().st_size == ChangeToken.SIZE
