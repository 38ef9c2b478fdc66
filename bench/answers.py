"""Answer comparison on plain numbers: math-verify alone vs `answers_equal`, which
compares two plain numbers as exact rationals and leaves the rest to math-verify.

    python bench/answers.py [--n 1319]

GSM8K test gold answers, each compared with itself, with a wrong number and with its
value written as a decimal / fraction. Prints seconds per method, the ratio, and how many
verdicts agree.
"""

import json
import time

import click

from posttrain.core.assets import asset_path
from posttrain.reason.grading import _symbolic_equal, answers_equal, gold_from_gsm8k, normalize_answer


@click.command()
@click.option("--n", default=1319, show_default=True)
def main(n):
    with open(asset_path("gsm8k-test"), encoding="utf-8") as fh:
        golds = [gold_from_gsm8k(json.loads(line)["answer"]) for line in fh if line.strip()][:n]
    cases = [(g, g) for g in golds] + [(str(int(g) + 1) if g.lstrip("-").isdigit() else g + "1", g) for g in golds]
    cases += [(f"{g}.0", g) for g in golds if g.lstrip("-").isdigit()] + [(f"{2 * int(g)}/2", g) for g in golds
                                                                         if g.lstrip("-").isdigit()]
    t0 = time.perf_counter()
    mv = [_symbolic_equal(normalize_answer(p), normalize_answer(g)) for p, g in cases]
    t_mv = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [answers_equal(p, g) for p, g in cases]
    t_ours = time.perf_counter() - t0
    print(f"{len(cases)} comparisons")
    print(f"{'math-verify only':<34} {t_mv:>8.2f}s")
    print(f"{'answers_equal':<34} {t_ours:>8.2f}s")
    print(f"math-verify / answers_equal time ratio: {t_mv / t_ours:.1f}; "
          f"same verdicts: {sum(a == b for a, b in zip(mv, ours))}/{len(cases)}")


if __name__ == "__main__":
    main()
