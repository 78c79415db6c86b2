"""Hub push/pull: repo validation, the dataset card, offline errors, and the calls made (HfApi stubbed)."""

import pytest

from precompute import HubUnavailableError, InvalidInputError
from precompute.store.hub import pull, push, validate_repo
from precompute.store.reader import open_artifacts

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.mark.parametrize("repo", ["no-slash", "a/b/c", "../etc", "user/../x", "user/na me", "/x", "u/" + "x" * 200])
def test_bad_repo_ids_are_refused(repo):
    with pytest.raises(InvalidInputError):
        validate_repo(repo)


@pytest.mark.parametrize("rev", ["../main", "main;rm", "a b"])
def test_bad_revisions_are_refused(rev):
    with pytest.raises(InvalidInputError):
        validate_repo("user/repo", rev)


def test_good_ids_pass():
    validate_repo("user-1/copy.suppression_artifacts", "v1.0")
    validate_repo("user/repo", "0123abcd" * 5)


def test_pull_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(HubUnavailableError, match="hf://someone/arts@v1"):
        open_artifacts("hf://someone/arts@v1")
    with pytest.raises(InvalidInputError, match="hf://USER/REPO@REVISION"):
        pull("hf://not a repo")


@pytest.mark.model
def test_push_uploads_a_dataset_repo_with_a_card(toy_artifacts, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    folder = tmp_path / "a"
    shutil.copytree(toy_artifacts, folder)
    calls = []

    class FakeApi:
        def create_repo(self, repo, **kw):
            calls.append(("create_repo", repo, kw))

        def create_branch(self, repo, **kw):
            calls.append(("create_branch", repo, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return type("Info", (), {"oid": "abc123"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push(folder, "me/cse-toy", revision="v1") == "abc123"
    assert calls[0][0] == "create_repo" and calls[0][2]["repo_type"] == "dataset"
    assert calls[1] == ("create_branch", "me/cse-toy", {"repo_type": "dataset", "branch": "v1", "exist_ok": True})
    up = calls[2][1]
    assert up["repo_type"] == "dataset" and up["revision"] == "v1" and up["repo_id"] == "me/cse-toy"
    card = (folder / "README.md").read_text()
    assert "SYNTHETIC" in card and 'open_artifacts("hf://me/cse-toy@<revision>")' in card


@pytest.mark.model
def test_push_refuses_a_corrupt_folder(toy_artifacts, tmp_path):
    import shutil

    folder = tmp_path / "b"
    shutil.copytree(toy_artifacts, folder)
    (folder / "semantic.safetensors").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match="fails verification"):
        push(folder, "me/x")
