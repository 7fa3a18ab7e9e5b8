"""What the portable kernels cost, as ratios measured side by side in one run (`make bench`).

Two child processes on the same data (all 60,000 training images, batch 256, lr 0.1, the test set
evaluated after every epoch, one torch thread):

\b
  native   each library's kernels for this CPU: the chapter's own loop
           (benchmarks/train_speed.py's copy of it: torchvision, ToTensor,
           DataLoader with 4 workers), ours, and the kernel floor
  pinned   pipeline.kernels' portable kernels, as every stage runs: ours
           and the kernel floor

"ours" is softmax_regression.training.loop.train, as the train stages call it.
The kernel floor is the arithmetic of an epoch alone, with every batch
already in place as float32: the two matrix products, the softmax, the
gradient and the SGD update of the scratch model, batch after batch.

It prints the seconds per epoch of each (the fastest epoch of each run, the same statistic
throughout: a busy moment lengthens a mean, not a minimum), then the ratios against the goals:
pinned / native for ours (goal <= 1.3x), ours / floor with the pinned
kernels (goal <= 1.5x) and the chapter's loop / ours pinned (goal >= 25x),
with the load average before and after (a 2-core machine: anything else
running skews it).

\b
    .venv/bin/python benchmarks/kernel_cost.py              # 10 epochs each
    .venv/bin/python benchmarks/kernel_cost.py --epochs 3 --skip-chapter
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from pipeline import kernels  # noqa: E402

KINDS = ("scratch", "concise")
GOALS = {"pinned / native": 1.3, "ours / floor": 1.5, "chapter / ours": 25.0}


def floor_epoch_s(train_x, train_y, test_x, batch_size: int, lr: float, epochs: int) -> float:
    """Seconds per epoch of the scratch model's arithmetic alone, every batch in place, and the test set's
    logits and argmax after it, as ours evaluates every epoch (min over epochs)."""
    import torch

    X, X_test = train_x.float().div_(255), test_x.float().div_(255)
    W = torch.zeros(X.shape[1], 10).T.contiguous().T  # laid out as the scratch model keeps it
    b = torch.zeros(10)
    batches = [(X[i:i + batch_size], train_y[i:i + batch_size].unsqueeze(1)) for i in range(0, len(X), batch_size)]
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for Xb, yb in batches:
            O = (W.T @ Xb.T).T + b
            P = torch.softmax(O, dim=1)
            P.scatter_add_(1, yb, torch.full(yb.shape, -1.0)).div_(len(Xb))
            W.sub_((P.T @ Xb).T, alpha=lr)
            b.sub_(P.sum(dim=0), alpha=lr)
        ((W.T @ X_test.T).T + b).argmax(dim=1)
        times.append(time.perf_counter() - start)
    return min(times)


def measure_here(side: str, epochs: int, skip_chapter: bool) -> dict:
    """The measurements of one side (``native`` or ``pinned``), in this process."""
    import torch

    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    from train_speed import Run, chapter_layout, load_ours, run_chapter, run_ours

    torch.set_num_threads(1)
    processed, raw = PROJECT_ROOT / "data/processed", PROJECT_ROOT / "data/raw"
    found: dict = {"chosen": kernels.chosen()}
    for kind in KINDS:
        run = Run(f"ours-{kind}")
        run_ours(kind, processed, raw, run, epochs, 256, 0.1, seed=0)
        found[f"ours-{kind}"] = min(run.all_epochs)  # the floor's statistic: the load adds to a mean, not a minimum
    train_split, test_split, _ = load_ours(processed, raw)
    found["floor"] = floor_epoch_s(torch.from_numpy(train_split.images),
                                   torch.from_numpy(train_split.labels.astype("int64")),
                                   torch.from_numpy(test_split.images), 256, 0.1, epochs)
    if side == "native" and not skip_chapter:
        import tempfile

        torch.set_num_threads(os.cpu_count() or 1)  # the chapter runs on torch's default: every core
        with tempfile.TemporaryDirectory(prefix="kernel_cost_") as tmp:
            root = chapter_layout(raw, Path(tmp))
            for kind in KINDS:
                run = Run(f"chapter-{kind}")
                run_chapter(kind, root, run, epochs, 256, 0.1, 4, 0)
                found[f"chapter-{kind}"] = min(run.all_epochs)
    return found


def measure(side: str, epochs: int, skip_chapter: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in kernels.pinned_environment({})}
    if side == "pinned":
        env = kernels.pinned_environment(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT / "src"), env.get("PYTHONPATH")]))
    args = [sys.executable, __file__, "--child", side, "--epochs", str(epochs)]
    args += ["--skip-chapter"] if skip_chapter else []
    click.echo(f"kernel-cost: {side} kernels, {epochs} epochs per model ...", err=True)
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()
        raise click.ClickException(f"the {side} run failed: {last[-1] if last else f'exit {result.returncode}'}")
    return json.loads(result.stdout.splitlines()[-1])


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def verdict(name: str, ratio: float) -> str:
    goal = GOALS[name]
    meets = ratio >= goal if name.startswith("chapter") else ratio <= goal
    relation = ">=" if name.startswith("chapter") else "<="
    return f"{ratio:5.2f}x (goal {relation} {goal:g}x: {'meets' if meets else 'MISSES'})"


@click.command(help=__doc__)
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--skip-chapter", is_flag=True, help="Leave out the chapter's loop (and its ratio).")
@click.option("--child", type=click.Choice(["native", "pinned"]), hidden=True)
def main(epochs: int, skip_chapter: bool, child: str | None) -> None:
    if child:
        print(json.dumps(measure_here(child, epochs, skip_chapter)))
        return
    missing = [folder for folder in ("data/raw", "data/processed") if not (PROJECT_ROOT / folder).is_dir()]
    if missing:
        raise click.ClickException(f"{' and '.join(missing)} missing in {PROJECT_ROOT}: run `dvc repro preprocess` first")
    before = load_average()
    sides = {side: measure(side, epochs, skip_chapter) for side in ("native", "pinned")}
    print(f"load average before: {before}; after: {load_average()}; {os.cpu_count()} CPUs, one torch thread for ours")
    print(f"kernels: native {sides['native']['chosen']}; pinned {sides['pinned']['chosen']}")
    print()
    print(f"{'s per epoch (fastest)':<22} {'native':>8} {'pinned':>8}")
    names = [f"ours-{k}" for k in KINDS] + ["floor"] + ([] if skip_chapter else [f"chapter-{k}" for k in KINDS])
    for name in names:
        pinned = sides["pinned"].get(name)
        shown = "-" if pinned is None else f"{pinned:.3f}"  # the chapter's loop runs on native kernels only
        print(f"{name:<22} {sides['native'][name]:>8.3f} {shown:>8}")
    print()
    for kind in KINDS:
        ours = sides["pinned"][f"ours-{kind}"]
        print(f"{kind}: pinned / native {verdict('pinned / native', ours / sides['native'][f'ours-{kind}'])}")
        print(f"{kind}: ours / floor (pinned) {verdict('ours / floor', ours / sides['pinned']['floor'])}")
        if not skip_chapter:
            chapter = sides["native"][f"chapter-{kind}"]
            print(f"{kind}: chapter / ours (pinned) {verdict('chapter / ours', chapter / ours)}")
    print(f"floor: pinned / native {sides['pinned']['floor'] / sides['native']['floor']:.2f}x")


if __name__ == "__main__":
    main()
