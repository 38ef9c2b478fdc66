"""DVC plots that render offline.

`dvc plots show` / `dvc plots diff` write HTML that loads Vega from a CDN, which
these machines (and many clusters) cannot reach. This wraps both commands with
an HTML template that inlines vega, vega-lite and vega-embed, fetched once from
the npm registry into `.venv/plots-js` (never committed):

    python -m posttrain.core.plots show            # -> dvc_plots/index.html, self-contained
    python -m posttrain.core.plots diff HEAD~1     # any `dvc plots diff` args
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click

from posttrain.core.io import atomic_open

# The major versions DVC's own HTML uses (dvc_render: vega 5, vega-lite 5, vega-embed 6).
JS_PACKAGES = {"vega": "5", "vega-lite": "5", "vega-embed": "6"}
JS_FILES = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js",
            "vega-embed": "build/vega-embed.min.js"}
DEFAULT_JS_DIR = Path(".venv/plots-js")

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots (offline)</title>
{inline}
<style>table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def ensure_js(js_dir: Path = DEFAULT_JS_DIR) -> dict[str, Path]:
    """Install the Vega bundles with npm once; return their paths."""
    paths = {name: js_dir / "node_modules" / name / rel for name, rel in JS_FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        npm = shutil.which("npm")
        if npm is None:
            raise click.ClickException("npm not found: it is needed once to fetch vega for offline plots "
                                       "(apt-get install npm, or use `dvc plots show --json`)")
        specs = [f"{name}@{major}" for name, major in JS_PACKAGES.items()]
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(js_dir), *specs],
                       check=True)
    return paths


def write_template(out: Path, js_dir: Path = DEFAULT_JS_DIR) -> Path:
    scripts = []
    for name, path in ensure_js(js_dir).items():
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
        scripts.append(f"<script>/* {name} */\n{code}\n</script>")
    with atomic_open(out) as fh:
        fh.write(TEMPLATE.format(inline="\n".join(scripts)))
    return out


def run_dvc_plots(command: str, args: list[str], out_dir: str, js_dir: Path = DEFAULT_JS_DIR) -> Path:
    template = write_template(js_dir / "offline-template.html", js_dir)
    subprocess.run([sys.executable, "-m", "dvc", "plots", command, *args, "--html-template", str(template),
                    "-o", out_dir], check=True)
    return Path(out_dir) / "index.html"


@click.group()
def cli() -> None:
    """`dvc plots show|diff` with Vega inlined: the HTML needs no network."""


def _command(name: str):
    @cli.command(name, context_settings={"ignore_unknown_options": True})
    @click.option("--out", "out_dir", default="dvc_plots", show_default=True)
    @click.option("--js-dir", type=click.Path(path_type=Path), default=DEFAULT_JS_DIR, show_default=True)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(out_dir: str, js_dir: Path, args: tuple[str, ...]) -> None:
        click.echo(run_dvc_plots(name, list(args), out_dir, js_dir), err=True)

    return cmd


show = _command("show")
diff = _command("diff")

if __name__ == "__main__":
    cli()
