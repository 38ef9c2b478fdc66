"""A throwaway copy of this DVC project, for tests that run `dvc` for real."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

from posttrain.core.profiles import apply_profile

REPO = Path(__file__).resolve().parents[1]


class Project:
    def __init__(self, root: Path):
        self.root = root
        env = dict(os.environ)
        # `python` in dvc.yaml commands must be this venv's, running this copy's src.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(root / "src")
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   DVC_NO_ANALYTICS="1", TOKENIZERS_PARALLELISM="false")
        self.env = env

    @classmethod
    def copy_of_repo(cls, dest: Path, profile: str | None = "tiny") -> "Project":
        """Copy git-tracked files (plus uncommitted edits) into `dest`, git-init it, apply a profile."""
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.splitlines()
        for rel in files:
            src = REPO / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        for stale in ("dvc.lock",):
            (dest / stale).unlink(missing_ok=True)
        proj = cls(dest)
        if profile:
            apply_profile(profile, dest)
        proj.git("init", "-q")
        proj.git("add", "-A")
        proj.git("commit", "-qm", "copy")
        return proj

    def git(self, *args: str) -> str:
        return self.run("git", "-c", "user.name=t", "-c", "user.email=t@t", *args)

    def dvc(self, *args: str, check: bool = True) -> str:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def run(self, *cmd: str, check: bool = True, stderr: bool = True) -> str:
        p = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-8000:]}")
        return p.stdout + (p.stderr if stderr else "")

    def stale_stages(self) -> set[str]:
        out = self.run(sys.executable, "-m", "dvc", "status", "--json", stderr=False)
        return set(json.loads(out)) if out.strip() else set()

    def would_run(self) -> set[str]:
        """Stages `dvc repro` would run if every stale stage changed its outputs."""
        out = self.dvc("repro", "--dry", "--force-downstream")
        return set(re.findall(r"^Running stage '([^']+)'", out, flags=re.M))

    def params(self) -> str:
        return (self.root / "params.yaml").read_text(encoding="utf-8")

    def lock(self) -> dict:
        import yaml

        return yaml.safe_load((self.root / "dvc.lock").read_text(encoding="utf-8"))
