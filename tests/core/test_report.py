"""`posttrain report`: the README's and docs' tables are what the committed files say."""

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from posttrain.core import cli_main, report

REPO = Path(__file__).resolve().parents[2]


def test_committed_readme_and_docs_agree_with_the_committed_files():
    diff = report.check(REPO)
    assert diff == "", f"README/docs disagree with metrics/ or bench/results/; run `posttrain report`:\n{diff}"


def test_every_block_is_rendered_somewhere_and_every_saved_bench_is_read():
    used = {m.group(2) for p in report.documents(REPO) for m in report.MARK.finditer(p.read_text())}
    assert used == set(report.BLOCKS)
    saved = {p.stem for p in (REPO / report.RESULTS_DIR).glob("*.json")}
    read = set(re.findall(r'RESULTS_DIR\}/(\w+)\.json', (REPO / "src/posttrain/core/report.py").read_text()))
    assert saved == read


@pytest.fixture
def copy(tmp_path):
    """The files the report reads and writes, copied out of the repository."""
    for name in ("README.md", "docs", "metrics", "bench/results"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


def run(root, *args):
    return CliRunner().invoke(cli_main.group, ["report", "--root", str(root), *args])


def test_check_fires_on_a_changed_metric_and_the_report_writes_it(copy):
    path = copy / "metrics/rec_evaluate.json"
    m = json.loads(path.read_text())
    m["llm"]["auc"], m["llm"]["auc_ci_low"] = 0.612, 0.551  # the target's CI low > 0.5 is now met
    high = f'{m["llm"]["auc_ci_high"]:.3f}'
    path.write_text(json.dumps(m))
    r = run(copy, "--check")
    assert r.exit_code == 1
    assert "-| rec_evaluate | LLM AUC" in r.output
    assert f"+| rec_evaluate | LLM AUC (P(Yes) at the answer token) | 0.612 [0.551, {high}]" in r.output
    assert "CI low > 0.5 on n >= 400: met" in r.output
    assert run(copy).exit_code == 0
    assert f"0.612 [0.551, {high}]" in (copy / "README.md").read_text()
    assert run(copy, "--check").exit_code == 0


def test_check_fires_on_a_number_typed_into_a_generated_table(copy):
    readme = copy / "README.md"
    text = readme.read_text()
    m = json.loads((copy / "metrics/rec_evaluate.json").read_text())["llm"]
    shown = f'{m["auc"]:.3f} [{m["auc_ci_low"]:.3f}, {m["auc_ci_high"]:.3f}]'
    typed = f'{m["auc"] + 0.001:.3f} [{m["auc_ci_low"]:.3f}, {m["auc_ci_high"]:.3f}]'
    assert shown in text
    readme.write_text(text.replace(shown, typed))
    r = run(copy, "--check")
    assert r.exit_code == 1 and f"-| rec_evaluate | LLM AUC (P(Yes) at the answer token) | {typed}" in r.output
    run(copy)
    assert readme.read_text() == text


def test_check_fires_on_a_changed_bench_result(copy):
    path = copy / "bench/results/generate.json"
    d = json.loads(path.read_text())
    d["results"]["llamacpp"]["tok_s"]["8"] = 100.0
    path.write_text(json.dumps(d))
    r = run(copy, "--check")
    assert r.exit_code == 1 and "docs/performance.md" in r.output


def test_an_unknown_block_is_an_error(copy):
    (copy / "docs/x.md").write_text("<!-- report:nope -->\n<!-- /report:nope -->\n")
    r = run(copy, "--check")
    assert r.exit_code == 1 and "unknown block report:nope" in r.output


def test_save_bench_records_the_command_cpu_date_and_commit(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench/x.py", "--steps", "3"])
    path = report.save_bench("x", {"runs": [1]}, root=tmp_path)
    d = json.loads(path.read_text())
    assert path == tmp_path / "bench/results/x.json"
    assert d["command"] == "python bench/x.py --steps 3" and d["runs"] == [1]
    assert set(d) >= {"cpu", "date", "commit"}


def test_halves_round_up():
    assert report.num(0.4875, 3) == "0.488" and report.num(0.5625, 3) == "0.563"
    assert report.num(-0.002813, 4, "+") == "-0.0028" and report.num(0.055046, 3, "+") == "+0.055"
