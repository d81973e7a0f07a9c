"""The update path: a project created with ``cruft create`` takes template changes with ``cruft
update``, without conflicts in the files its author did not touch.

The test does not depend on this repository's history (CI clones are shallow and the template
keeps changing): it copies the template as it is now (tracked and untracked files, as git sees
them) into a scratch repository and commits it twice, first as an "older" template with a few
changes made here, then as it really is. The older version differs the ways template versions
differ: a rendered file (the Makefile), the README, a file copied without rendering
(``src/.../__init__.py``), the Dockerfile template the post-generation hook renders, a file the
newer template adds and one it removes.

A project is created from the older commit, committed, edited by its "author" (a task module,
a hyper-parameter, a new module), and updated to the newer commit: no ``.rej`` files, no
conflict markers, the author's edits kept, and every other file equal to a fresh project of the
newer commit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEMPLATE, run

PROJECT_DIR = "{{cookiecutter.project_slug}}"
PACKAGE_DIR = f"{PROJECT_DIR}/src/{{{{cookiecutter.package_name}}}}"
ANSWERS = {"executor_name": "Update Exec", "target": "detection", "cuda_variants": "cu118,cpu"}
SLUG, PACKAGE = "update-exec", "update_exec"
# What the older template has that the newer one does not (and the reverse).
OLD_LINE = "# a line of the older template\n"
ADDED_BY_NEW = f"{PROJECT_DIR}/.hadolint.yaml"
REMOVED_BY_NEW = f"{PROJECT_DIR}/OLD_NOTES.md"
CONFLICT_MARKERS = ("<<<<<<< ", "\n=======\n", ">>>>>>> ")


def git_env(home: Path) -> dict[str, str]:
    """git without the machine's configuration (signing, hooks, identity)."""
    config = home / "gitconfig"
    config.write_text(
        "[user]\n\tname = Template Test\n\temail = test@example.invalid\n"
        "[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n"
    )
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": str(config),
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(home),
    }


def git(env: dict[str, str], cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd=cwd, env=env).stdout.strip()


def template_files() -> list[str]:
    """The template as it is now: what git tracks or would track (not what it ignores)."""
    listed = subprocess.run(
        [
            "git",
            "-C",
            str(TEMPLATE),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if (TEMPLATE / name).is_file()})


def make_older(repo: Path) -> None:
    """Turn the copy of the template into its "older" version."""
    for name in (
        f"{PROJECT_DIR}/Makefile",
        f"{PACKAGE_DIR}/__init__.py",
        f"{PROJECT_DIR}/docker/variant.Dockerfile.j2",
    ):
        path = repo / name
        path.write_text(path.read_text() + OLD_LINE)
    readme = repo / PROJECT_DIR / "README.md"
    readme.write_text(readme.read_text().replace("\n", "\n\nAn older paragraph.\n", 1))
    (repo / ADDED_BY_NEW).unlink()
    (repo / REMOVED_BY_NEW).write_text("Notes only the older template had.\n")


def cruft(env: dict[str, str], cwd: Path, *args: str):
    return run([sys.executable, "-m", "cruft", *args], cwd=cwd, env=env, timeout=300)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except git's own, by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory):
    """A scratch template repository: (path, older commit, newer commit, git environment)."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    home = tmp_path_factory.mktemp("git-home")
    env = git_env(home)
    repo = tmp_path_factory.mktemp("template-repo") / "template"
    for name in template_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TEMPLATE / name, target)
    git(env, repo.parent, "init", "-q", str(repo))
    assert (repo / ADDED_BY_NEW).is_file() and not (repo / REMOVED_BY_NEW).exists()
    newer = tree(repo)
    make_older(repo)
    git(env, repo, "add", "-A")
    git(env, repo, "commit", "-q", "-m", "older template")
    older_commit = git(env, repo, "rev-parse", "HEAD")
    for name in tree(repo):
        (repo / name).unlink()
    for name, content in newer.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content)
    git(env, repo, "add", "-A")
    git(env, repo, "commit", "-q", "-m", "newer template")
    newer_commit = git(env, repo, "rev-parse", "HEAD")
    return repo, older_commit, newer_commit, env


def create(template_repo, commit: str, output: Path) -> Path:
    repo, _older, _newer, env = template_repo
    output.mkdir(parents=True)
    cruft(
        env,
        output,
        "create",
        str(repo),
        "--checkout",
        commit,
        "--no-input",
        "--output-dir",
        str(output),
        "--extra-context",
        json.dumps(ANSWERS),
    )
    return output / SLUG


def test_cruft_update_takes_the_newer_template_without_conflicts(template_repo, tmp_path):
    _repo, older, newer, env = template_repo
    project = create(template_repo, older, tmp_path / "created")
    assert OLD_LINE in (project / "Makefile").read_text()
    assert OLD_LINE in (project / "docker" / "cpu.Dockerfile").read_text()
    assert (project / "OLD_NOTES.md").exists() and not (project / ".hadolint.yaml").exists()
    git(env, project, "init", "-q")
    git(env, project, "add", "-A")
    git(env, project, "commit", "-q", "-m", "created from the template")

    # the author's work, committed: cruft update needs a clean tree
    edits = {
        f"src/{PACKAGE}/tasks/infer.py": "\n# my model's inference goes here\n",
        "img-man/infer-template.yaml": "# my hyper-parameter\nmy_threshold: 0.5\n",
    }
    for name, addition in edits.items():
        path = project / name
        path.write_text(path.read_text() + addition)
    new_module = project / "src" / PACKAGE / "my_model.py"
    new_module.write_text('"""My model."""\n')
    git(env, project, "add", "-A")
    git(env, project, "commit", "-q", "-m", "my executor")
    edited = {name: (project / name).read_bytes() for name in edits}

    cruft(
        env,
        project,
        "update",
        "--checkout",
        newer,
        "--skip-apply-ask",
        "--allow-untracked-files",
    )

    files = tree(project)
    rejected = [name for name in files if name.endswith(".rej")]
    assert not rejected, rejected
    conflicted = [
        name
        for name, content in files.items()
        if any(marker.encode() in content for marker in CONFLICT_MARKERS)
    ]
    assert not conflicted, conflicted
    assert json.loads(files.pop(".cruft.json"))["commit"] == newer
    # the author's edits are kept
    for name, content in edited.items():
        assert files.pop(name) == content, name
    assert files.pop(f"src/{PACKAGE}/my_model.py") == b'"""My model."""\n'
    # everything else is what the newer template makes
    fresh = tree(create(template_repo, newer, tmp_path / "fresh"))
    fresh.pop(".cruft.json")
    for name in edits:
        fresh.pop(name)
    assert sorted(files) == sorted(fresh)
    differing = [name for name in fresh if files[name] != fresh[name]]
    assert not differing, differing
    assert "OLD_NOTES.md" not in files and ".hadolint.yaml" in files
