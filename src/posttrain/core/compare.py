"""Paired comparison of two revisions: every eval metric's difference B - A with a 95% CI.

Each eval stage keeps its per-item predictions in a git-tracked `metrics/<stage>_predictions.jsonl`
(`cache: false` outs). This reads them at two revisions through `dvc.api.open` (a commit,
branch, tag or `dvc exp` name: DVC resolves experiment names as revisions, see
`dvc.scm.resolve_rev`; `workspace` or no revision = the working tree), joins the items by id
and bootstraps each metric's difference over the shared items, resampling their clusters
(users, prefixes, problems) with `posttrain.core.stats`.

    posttrain compare main my-exp            # Markdown table, fit for a PR comment
    posttrain compare HEAD~1 --json          # B = workspace
    python -m posttrain.core.compare A B --stage pref_rm
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click

from posttrain.core import stats
from posttrain.core.io import DataError, dumps

WORKSPACE = "workspace"


@dataclass(frozen=True)
class Spec:
    """What one predictions file measures: NAME -> (metric, field, ...) in `stats.METRICS` terms;
    each metric is also measured on every value of the `groups` fields (e.g. rarity buckets)."""

    path: str
    cluster: str
    metrics: dict
    groups: tuple = field(default=())


SPECS = {
    "rec_evaluate": Spec("metrics/rec_evaluate_predictions.jsonl", "user", {
        "llm_auc": ("auc", "label", "llm"), "llm_accuracy": ("proportion", "llm_correct"),
        "baseline_auc": ("auc", "label", "baseline"), "baseline_accuracy": ("proportion", "baseline_correct")}),
    "pref_rm": Spec("metrics/pref_rm_predictions.jsonl", "prefix_id", {
        "accuracy": ("proportion", "correct"), "margin": ("mean", "margin")}, groups=("bucket",)),
    "pref_dpo": Spec("metrics/pref_dpo_predictions.jsonl", "prefix_id", {
        "reward_accuracy": ("proportion", "correct"), "reward_margin": ("mean", "margin")}, groups=("bucket",)),
    "pref_grpo": Spec("metrics/pref_grpo_predictions.jsonl", "prefix_id", {
        "reward_before": ("mean", "reward_before"), "reward_after": ("mean", "reward_after"),
        # each revision scores with its own RM, so across revisions only the change is comparable
        "reward_delta": ("mean_diff", "reward_after", "reward_before")}),
    "reason_verifier": Spec("metrics/reason_verifier_predictions.jsonl", "problem_id", {
        "auc": ("auc", "label", "verifier_score"), "mse": ("mse", "verifier_score", "score"),
        "accuracy": ("proportion", "hit")}, groups=("origin",)),
    "reason_filter": Spec("metrics/reason_filter_predictions.jsonl", "problem_id", {
        "pass_rate": ("proportion", "grade")}, groups=("domain", "source")),
}


def read_predictions(path: str, rev: str | None, repo: str | None = None) -> dict[str, dict] | None:
    """id -> record of a predictions file at `rev` (None / "workspace": working tree); None if
    the file does not exist there."""
    import dvc.api
    from dvc.exceptions import DvcException, PathMissingError

    rev = None if rev in (None, "", WORKSPACE) else rev
    where = f"{path}@{rev or WORKSPACE}"
    try:
        with dvc.api.open(path, repo=repo, rev=rev, encoding="utf-8") as fh:
            text = fh.read()
    except (FileNotFoundError, PathMissingError):
        return None
    except DvcException as e:  # unknown revision, not a DVC/git repository, ...: one line, no traceback
        raise click.ClickException(f"{where}: {e}") from None
    out: dict[str, dict] = {}
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(where, f"invalid JSON: {e.msg}", line=line) from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise DataError(where, "a prediction record needs an id", line=line, field="id")
        if str(rec["id"]) in out:
            raise DataError(where, f"duplicate id {rec['id']!r}", line=line, field="id")
        out[str(rec["id"])] = rec
    return out


def _column(rows: list[dict], name: str, where: str) -> list:
    for r in rows:
        if r.get(name) is None:
            raise DataError(where, f"missing value in record {r['id']!r}", field=name)
    return [r[name] for r in rows]


def compare_rows(spec: Spec, a: dict[str, dict], b: dict[str, dict], *, seed: int,
                 where: str = "") -> list[dict]:
    """One result per metric (and per group value): A, B and B - A with its CI on shared ids."""
    shared = sorted(set(a) & set(b))
    ra, rb = [a[i] for i in shared], [b[i] for i in shared]
    subsets = [(None, list(range(len(shared))))]
    for g in spec.groups:
        values = sorted({str(r.get(g)) for r in ra})
        subsets += [(f"{g}={v}", [k for k, r in enumerate(ra) if str(r.get(g)) == v]) for v in values]
    out = []
    for group, idx in subsets:
        sa, sb = [ra[k] for k in idx], [rb[k] for k in idx]
        clusters = _column(sa, spec.cluster, where)
        for name, (metric, *fields) in spec.metrics.items():
            ca = [_column(sa, f, where) for f in fields]
            cb = [_column(sb, f, where) for f in fields]
            d = stats.difference(metric, cb, ca, clusters, seed=seed, name="diff")
            out.append({"metric": name, "group": group,
                        "a": _round(stats.point(metric, ca)), "b": _round(stats.point(metric, cb)), **d})
    return out


def compare(rev_a: str | None, rev_b: str | None, *, repo: str | None = None, stages=None,
            seed: int) -> dict:
    """{"a", "b", "stages": {stage: {"n_a", "n_b", "n_shared", "rows": [...]}}, "missing": [...]}."""
    result = {"a": rev_a or WORKSPACE, "b": rev_b or WORKSPACE, "stages": {}, "missing": []}
    for stage in stages or SPECS:
        spec = SPECS[stage]
        a, b = read_predictions(spec.path, rev_a, repo), read_predictions(spec.path, rev_b, repo)
        if a is None or b is None:
            result["missing"].append(stage)
            continue
        rows = compare_rows(spec, a, b, seed=seed, where=spec.path)
        # Same predictions in both usually means the stage did not rerun for B (e.g. a
        # `dvc exp run TARGET` whose target does not depend on it): say so, not "no effect".
        result["stages"][stage] = {"n_a": len(a), "n_b": len(b), "n_shared": len(set(a) & set(b)),
                                   "identical": a == b, "rows": rows}
    return result


def _round(x):
    return None if x is None else round(x, stats.DIGITS)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def to_markdown(result: dict) -> str:
    lines = [f"Paired comparison, B - A: A = `{result['a']}`, B = `{result['b']}` "
             f"(95% cluster bootstrap CI over the items both share)", "",
             "| stage | metric | A | B | B - A | 95% CI | n (clusters) |",
             "|---|---|---:|---:|---:|---|---:|"]
    for stage, block in result["stages"].items():
        for r in block["rows"]:
            metric = r["metric"] + (f" [{r['group']}]" if r["group"] else "")
            ci = "n/a" if r["diff_ci_low"] is None else f"[{_fmt(r['diff_ci_low'])}, {_fmt(r['diff_ci_high'])}]"
            lines.append(f"| {stage} | {metric} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} | {ci} "
                         f"| {r['n']} ({r['n_clusters']}) |")
    notes = [f"{s}: {b['n_shared']} shared items ({b['n_a']} in A, {b['n_b']} in B)"
             for s, b in result["stages"].items() if not b["n_shared"] == b["n_a"] == b["n_b"]]
    notes += [f"{s}: identical predictions in A and B (did the stage run in both? "
              f"`dvc exp run` with targets reruns only what they depend on)"
              for s, b in result["stages"].items() if b.get("identical")]
    if result["missing"]:
        notes.append("no predictions in A or B: " + ", ".join(result["missing"]))
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


@click.command("compare")
@click.argument("rev_a")
@click.argument("rev_b", required=False)
@click.option("--stage", "stages", multiple=True, type=click.Choice(sorted(SPECS)),
              help="Only these stages (repeatable); default: every stage with predictions in both.")
@click.option("--repo", default=None, help="DVC repository (path or URL); default: the current one.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a Markdown table.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def command(rev_a, rev_b, stages, repo, as_json, seed):
    """Metric differences B - A between revisions A and B (B omitted: the workspace)."""
    result = compare(rev_a, rev_b, repo=repo, stages=list(stages) or None, seed=seed)
    click.echo(dumps(result, indent=2) if as_json else to_markdown(result), nl=as_json)


if __name__ == "__main__":
    from posttrain.core.cli import run

    run(command, prog="posttrain compare")
