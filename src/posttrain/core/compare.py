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
    posttrain compare --a 'uniform-s*' --b dense-s0,dense-s1,dense-s2   # arms of several seeds

An arm of several runs (training seeds) is judged by the mean over its runs, B's minus A's,
with a two-level bootstrap CI (runs within each arm, then the shared items' clusters:
`stats.group_difference`) beside the items-only CI and each arm's seed-to-seed sd. Names
with `*?[` are globs over `dvc exp` names, branches and tags.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
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


def compare_group_rows(spec: Spec, a_runs: list[dict], b_runs: list[dict], *, seed: int,
                       where: str = "") -> list[dict]:
    """`compare_rows` for arms of several runs: B's mean over runs minus A's, with the two-level
    CI, the items-only CI and each arm's seed-to-seed sd, on the ids every run has."""
    shared = sorted(set.intersection(*(set(r) for r in a_runs + b_runs)))
    ref = [a_runs[0][i] for i in shared]  # groups (buckets) as A's first run has them
    subsets = [(None, list(range(len(shared))))]
    for g in spec.groups:
        values = sorted({str(r.get(g)) for r in ref})
        subsets += [(f"{g}={v}", [k for k, r in enumerate(ref) if str(r.get(g)) == v]) for v in values]
    out = []
    for group, idx in subsets:
        ids = [shared[k] for k in idx]
        clusters = _column([ref[k] for k in idx], spec.cluster, where)
        for name, (metric, *fields) in spec.metrics.items():
            def cols(run):
                rows = [run[i] for i in ids]
                return [_column(rows, f, where) for f in fields]
            d = stats.group_difference(metric, [cols(r) for r in b_runs], [cols(r) for r in a_runs], clusters,
                                       seed=seed, name="diff")
            out.append({"metric": name, "group": group, "a": d.pop("old"), "b": d.pop("new"),
                        "a_sd": d.pop("old_sd"), "b_sd": d.pop("new_sd"), "runs_a": d.pop("old_runs"),
                        "runs_b": d.pop("new_runs"), **d})
    return out


def _revs(x) -> list:
    return [x] if x is None or isinstance(x, str) else list(x)


def compare(rev_a, rev_b, *, repo: str | None = None, stages=None, seed: int) -> dict:
    """{"a", "b", "stages": {stage: {"n_a", "n_b", "n_shared", "rows": [...]}}, "missing": [...]}.
    `rev_a`, `rev_b`: a revision, or a list of revisions (an arm of several training runs)."""
    a_revs, b_revs = _revs(rev_a), _revs(rev_b)
    if len(a_revs) == len(b_revs) == 1:
        return _compare_pair(a_revs[0], b_revs[0], repo=repo, stages=stages, seed=seed)
    label = lambda revs: ",".join(r or WORKSPACE for r in revs)  # noqa: E731
    result = {"a": label(a_revs), "b": label(b_revs), "a_revs": [r or WORKSPACE for r in a_revs],
              "b_revs": [r or WORKSPACE for r in b_revs], "stages": {}, "missing": []}
    for stage in stages or SPECS:
        spec = SPECS[stage]
        runs = {arm: [read_predictions(spec.path, r, repo) for r in revs]
                for arm, revs in (("a", a_revs), ("b", b_revs))}
        if any(p is None for ps in runs.values() for p in ps):
            result["missing"].append(stage)
            continue
        rows = compare_group_rows(spec, runs["a"], runs["b"], seed=seed, where=spec.path)
        ids = {arm: set.intersection(*(set(p) for p in ps)) for arm, ps in runs.items()}
        first = runs["a"][0]
        result["stages"][stage] = {
            "n_a": len(ids["a"]), "n_b": len(ids["b"]), "n_shared": len(ids["a"] & ids["b"]),
            "identical": all(p == first for ps in runs.values() for p in ps),
            # every run of an arm the same: its training seed changed nothing (not wired?)
            "identical_within": [arm for arm, ps in runs.items() if len(ps) > 1 and all(p == ps[0] for p in ps)],
            "rows": rows}
    return result


def _compare_pair(rev_a: str | None, rev_b: str | None, *, repo: str | None = None, stages=None,
                  seed: int) -> dict:
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


GLOB = set("*?[")


def rev_names(repo: str | None = None) -> list[str]:
    """`dvc exp` names, branches and tags of the repository (what a glob may match). DVC keeps
    an experiment as the git ref refs/exps/<baseline>/<name>."""
    cmd = ["git", "for-each-ref", "--format=%(refname)", "refs/exps", "refs/heads", "refs/tags"]
    p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if p.returncode:
        raise click.ClickException(f"cannot list revisions of {repo or '.'}: {p.stderr.strip()}")
    names = set()
    for ref in p.stdout.split():
        parts = ref.split("/")
        if parts[1] != "exps":
            names.add("/".join(parts[2:]))
        elif len(parts) == 5 and len(parts[2]) == 2:  # not refs/exps/exec, celery: DVC's bookkeeping
            names.add(parts[4])
    return sorted(names)


def expand_revs(text: str, repo: str | None = None) -> list[str]:
    """'a,b,c' -> [a, b, c]; a name with `*?[` -> every matching experiment, branch or tag."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise click.BadParameter(f"empty revision in {text!r}")
        if GLOB & set(part):
            hits = fnmatch.filter(rev_names(repo), part)
            if not hits:
                raise click.BadParameter(f"{part!r} matches no experiment, branch or tag")
            out += [h for h in hits if h not in out]
        elif part not in out:
            out.append(part)
    return out


def _round(x):
    return None if x is None else round(x, stats.DIGITS)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _ci(r, key="diff") -> str:
    return "n/a" if r[f"{key}_ci_low"] is None else f"[{_fmt(r[f'{key}_ci_low'])}, {_fmt(r[f'{key}_ci_high'])}]"


def _mean_sd(x, sd) -> str:
    return _fmt(x) + ("" if sd is None else f" ± {sd:.4f}")


def to_markdown(result: dict) -> str:
    groups = "a_revs" in result
    if groups:
        lines = [f"Comparison of arms, B - A (mean over each arm's runs): A = `{result['a']}`, "
                 f"B = `{result['b']}`; A and B show mean ± the seed-to-seed sd; the first CI resamples "
                 f"runs, then the shared items' clusters, the second the items alone", "",
                 "| stage | metric | A (runs) | B (runs) | B - A | 95% CI, seeds + items | 95% CI, items only "
                 "| n (clusters) |",
                 "|---|---|---:|---:|---:|---|---|---:|"]
    else:
        lines = [f"Paired comparison, B - A: A = `{result['a']}`, B = `{result['b']}` "
                 f"(95% cluster bootstrap CI over the items both share)", "",
                 "| stage | metric | A | B | B - A | 95% CI | n (clusters) |",
                 "|---|---|---:|---:|---:|---|---:|"]
    for stage, block in result["stages"].items():
        for r in block["rows"]:
            metric = r["metric"] + (f" [{r['group']}]" if r["group"] else "")
            if groups:
                lines.append(f"| {stage} | {metric} | {_mean_sd(r['a'], r['a_sd'])} ({r['runs_a']}) "
                             f"| {_mean_sd(r['b'], r['b_sd'])} ({r['runs_b']}) | {_fmt(r['diff'])} | {_ci(r)} "
                             f"| {_ci(r, 'diff_items')} | {r['n']} ({r['n_clusters']}) |")
            else:
                lines.append(f"| {stage} | {metric} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} "
                             f"| {_ci(r)} | {r['n']} ({r['n_clusters']}) |")
    notes = [f"{s}: {b['n_shared']} shared items ({b['n_a']} in A, {b['n_b']} in B)"
             for s, b in result["stages"].items() if not b["n_shared"] == b["n_a"] == b["n_b"]]
    notes += [f"{s}: identical predictions in A and B (did the stage run in both? "
              f"`dvc exp run` with targets reruns only what they depend on)"
              for s, b in result["stages"].items() if b.get("identical")]
    notes += [f"{s}: every run of arm {arm.upper()} has the same predictions (did its training seed change?)"
              for s, b in result["stages"].items() for arm in b.get("identical_within", [])]
    if result["missing"]:
        notes.append("no predictions in A or B: " + ", ".join(result["missing"]))
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


@click.command("compare")
@click.argument("rev_a", required=False)
@click.argument("rev_b", required=False)
@click.option("--a", "arm_a", default=None, metavar="REVS",
              help="Arm A: comma-separated revisions or experiment names (globs: 'uniform-s*'); "
                   "instead of the positional A.")
@click.option("--b", "arm_b", default=None, metavar="REVS", help="Arm B, as --a; default: the workspace.")
@click.option("--stage", "stages", multiple=True, type=click.Choice(sorted(SPECS)),
              help="Only these stages (repeatable); default: every stage with predictions in both.")
@click.option("--repo", default=None, help="DVC repository (path or URL); default: the current one.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a Markdown table.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def command(rev_a, rev_b, arm_a, arm_b, stages, repo, as_json, seed):
    """Metric differences B - A between revisions A and B (B omitted: the workspace), or between
    arms of several runs each (--a/--b)."""
    if (rev_a is not None and arm_a is not None) or (rev_b is not None and arm_b is not None):
        raise click.UsageError("give A and B either as arguments or as --a/--b, not both")
    if rev_a is None and arm_a is None:
        raise click.UsageError("missing revision A (an argument, or --a REVS)")
    a = expand_revs(arm_a, repo) if arm_a is not None else [rev_a]
    b = expand_revs(arm_b, repo) if arm_b is not None else [rev_b]
    result = compare(a, b, repo=repo, stages=list(stages) or None, seed=seed)
    click.echo(dumps(result, indent=2) if as_json else to_markdown(result), nl=as_json)


if __name__ == "__main__":
    from posttrain.core.cli import run

    run(command, prog="posttrain compare")
