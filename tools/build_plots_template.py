"""Write tools/plots/offline.html: DVC's page template for `dvc plots show` / `dvc plots diff` with vega,
vega-lite and vega-embed inlined, so the page renders without the network (DVC's own page loads them from
a CDN). The scripts come from tools/node_modules (`npm ci --prefix tools`, versions pinned in
tools/package-lock.json); their licences are copied to tools/plots/licenses/. Run by `make plots-template`
(`python tools/build_plots_template.py [DIR]` writes to DIR instead).
"""

import json
import shutil
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
PACKAGES = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
"""What DVC replaces in a template; a script holding one would be corrupted."""

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}: inlined by tools/build_plots_template.py, licences in tools/plots/licenses/ -->
{inlined}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def main(out: Path = TOOLS / "plots") -> None:
    """Write ``out``/offline.html and ``out``/licenses/."""
    licenses = out / "licenses"
    licenses.mkdir(parents=True, exist_ok=True)
    scripts, versions = [], []
    for package, script in PACKAGES.items():
        root = TOOLS / "node_modules" / package
        version = json.loads((root / "package.json").read_text())["version"]
        code = (root / script).read_text()
        clash = [p for p in PLACEHOLDERS if p in code] + (["</script"] if "</script" in code.lower() else [])
        if clash:
            raise SystemExit(f"{package} {version} holds {', '.join(clash)}: it cannot be inlined as it is")
        scripts.append(f"    <script>/* {package} {version} */\n{code}\n    </script>")
        versions.append(f"{package} {version}")
        if (root / "LICENSE").is_file():
            shutil.copyfile(root / "LICENSE", licenses / f"{package}.txt")
        else:  # vega's npm package ships none; its licence is the Interactive Data Lab's BSD-3-Clause
            licence = json.loads((root / "package.json").read_text())["license"]
            (licenses / f"{package}.txt").write_text(
                f"{package} {version}: licence {licence} (its package.json); the npm package ships no licence "
                "file.\nThe vega projects' BSD-3-Clause licence, as vega-lite's package ships it:\n\n"
                + (TOOLS / "node_modules" / "vega-lite" / "LICENSE").read_text())
    page = PAGE.replace("{{", "{").replace("}}", "}").replace("{versions}", ", ".join(versions))
    page = page.replace("{inlined}", "\n".join(scripts))  # last: the scripts hold braces of their own
    (out / "offline.html").write_text(page)
    print(f"wrote {out / 'offline.html'} ({len(page) // 1024} KB): {', '.join(versions)}")


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:2]))
