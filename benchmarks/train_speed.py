"""Training speed: the chapter's own loop against ours, on the same Fashion-MNIST data, plus a train stage's peak RSS.

Four runs, each N epochs at batch 256 and lr 0.1 on all 60,000 training
images, with the 10,000 test images evaluated after every epoch:

\b
  chapter-scratch  the d2l loop, self-contained: torchvision's FashionMNIST
                   with ToTensor per sample, DataLoader(shuffle, 4 workers),
                   the hand-written softmax / cross_entropy by indexing,
                   autograd and d2l.sgd; train_epoch_ch3 / evaluate_accuracy.
  chapter-concise  the same loop with nn.Sequential(Flatten, Linear(784, 10)),
                   weights ~ N(0, 0.01), CrossEntropyLoss(reduction='none'),
                   torch.optim.SGD.
  ours-scratch     softmax_regression.training.loop.train with ShuffledBatches
  ours-concise     and the model each train stage builds (scratch.Net and its
                   sgd_step; concise.net, torch.optim.SGD and its sgd_step), as
                   pipeline/train_scratch.py and train_concise.py call them, but
                   in the chapter's val_size 0 setup (test set validates).

Threads: ours runs on one torch thread, as the train stages train (the
same bytes on any machine); the chapter's loop on torch's default (every
core), as the chapter runs it. --threads and --chapter-threads change either.

An epoch's time is wall-clock from the start of its training pass to the end
of its test-set evaluation. "setup" is the one-off work before the first
epoch (the chapter: reading the dataset and making the loaders; ours: loading
the uint8 splits and building batches and model).

The last lines hold ours against the targets: 10 epochs in <= 1.0 s (min
over the repeats) and >= 35x the chapter's loop (mean totals).

Then `python -m pipeline train_{scratch,concise} --no-progress` runs
as a subprocess in a temporary directory (data/processed symlinked,
params.yaml copied, MLflow pointed at a store in there, so the workspace's
models/, reports/ and mlflow.db stay untouched),
and its peak RSS is read from the kernel's rusage of that one child (wait4).

Run from the project root:

\b
    .venv/bin/python benchmarks/train_speed.py            # everything, 10 epochs
    .venv/bin/python benchmarks/train_speed.py --skip-chapter --epochs 3
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils import data
from torchvision import transforms

from softmax_regression.data.batches import ShuffledBatches, to_labels
from softmax_regression.data.features import scale_pixels
from softmax_regression.data.splits import N_TEST, N_TRAIN, Split, flatten, image_side, load_raw, load_split
from softmax_regression.models import concise, losses, scratch
from softmax_regression.training.loop import initial_weights, train

log = logging.getLogger("train_speed")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
KINDS = ("scratch", "concise")
N_INPUTS, N_OUTPUTS = 784, 10


@dataclass
class Run:
    name: str
    setup_s: list[float] = field(default_factory=list)
    epoch_s: list[list[float]] = field(default_factory=list)   # one list of epoch times per repeat
    train_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)

    @property
    def all_epochs(self) -> list[float]:
        return [t for rep in self.epoch_s for t in rep]

    @property
    def mean_epoch(self) -> float:
        return statistics.fmean(self.all_epochs)

    @property
    def totals(self) -> list[float]:
        return [sum(rep) for rep in self.epoch_s]


# --- the chapter's loop, copied from d2l (chapter 3.6 / 3.7), without the d2l package -------------

class Accumulator:
    """Accumulate sums over n variables (d2l.Accumulator)."""

    def __init__(self, n):
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


def accuracy(y_hat, y):
    """Number of correct predictions (d2l.accuracy)."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def evaluate_accuracy(net, data_iter):
    """Accuracy of a model on a dataset (d2l.evaluate_accuracy)."""
    if isinstance(net, torch.nn.Module):
        net.eval()
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            metric.add(accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


def train_epoch_ch3(net, train_iter, loss, updater):
    """One training epoch (d2l.train_epoch_ch3)."""
    if isinstance(net, torch.nn.Module):
        net.train()
    metric = Accumulator(3)
    for X, y in train_iter:
        y_hat = net(X)
        l = loss(y_hat, y)  # noqa: E741 (the chapter's name)
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            l.sum().backward()
            updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
    return metric[0] / metric[2], metric[1] / metric[2]


def sgd(params, lr, batch_size):
    """Minibatch stochastic gradient descent (d2l.sgd)."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def load_data_fashion_mnist(root: Path, batch_size: int, workers: int):
    """d2l.load_data_fashion_mnist, reading the already decompressed files under root/FashionMNIST/raw/."""
    trans = transforms.Compose([transforms.ToTensor()])
    mnist_train = torchvision.datasets.FashionMNIST(root=str(root), train=True, transform=trans, download=False)
    mnist_test = torchvision.datasets.FashionMNIST(root=str(root), train=False, transform=trans, download=False)
    return (data.DataLoader(mnist_train, batch_size, shuffle=True, num_workers=workers),
            data.DataLoader(mnist_test, batch_size, shuffle=False, num_workers=workers))


def chapter_model(kind: str, lr: float):
    """(net, loss, updater) of the chapter's scratch (3.6) or concise (3.7) implementation."""
    if kind == "scratch":
        W = torch.normal(0, 0.01, size=(N_INPUTS, N_OUTPUTS), requires_grad=True)
        b = torch.zeros(N_OUTPUTS, requires_grad=True)

        def softmax(X):
            X_exp = torch.exp(X)
            partition = X_exp.sum(1, keepdim=True)
            return X_exp / partition

        def net(X):
            return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)

        def cross_entropy(y_hat, y):
            return -torch.log(y_hat[range(len(y_hat)), y])

        def updater(batch_size):
            return sgd([W, b], lr, batch_size)

        return net, cross_entropy, updater

    net = nn.Sequential(nn.Flatten(), nn.Linear(N_INPUTS, N_OUTPUTS))

    def init_weights(m):
        if type(m) == nn.Linear:  # noqa: E721 (as the chapter writes it)
            nn.init.normal_(m.weight, std=0.01)

    net.apply(init_weights)
    return net, nn.CrossEntropyLoss(reduction="none"), torch.optim.SGD(net.parameters(), lr=lr)


def chapter_layout(raw_dir: Path, tmp: Path) -> Path:
    """A torchvision root whose FashionMNIST/raw/ links to the four decompressed IDX files."""
    root = tmp / "chapter_root"
    target = root / "FashionMNIST" / "raw"
    target.mkdir(parents=True)
    for name in RAW_FILES:
        (target / name).symlink_to(raw_dir / name)
    return root


def run_chapter(kind: str, root: Path, run: Run, epochs: int, batch_size: int, lr: float, workers: int,
                seed: int) -> None:
    """train_ch3 (without its Animator and asserts), timing each epoch's train pass plus test evaluation."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train_iter, test_iter = load_data_fashion_mnist(root, batch_size, workers)
    net, loss, updater = chapter_model(kind, lr)
    run.setup_s.append(time.perf_counter() - t0)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch_ch3(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        times.append(time.perf_counter() - t0)
        log.info("%s epoch %d: %.2f s, train loss %.4f, train acc %.4f, test acc %.4f",
                 run.name, epoch + 1, times[-1], train_loss, train_acc, test_acc)
    run.epoch_s.append(times)
    run.train_loss.append(train_loss)
    run.test_acc.append(test_acc)


# --- ours ---------------------------------------------------------------------------------------

def load_ours(processed_dir: Path, raw_dir: Path) -> tuple[Split, Split, str]:
    """All 60,000 training images and the test set, flattened uint8: the chapter's val_size 0 setup.

    From data/processed (train + val joined back together) when it holds 28x28
    splits of the full training set, else from the raw IDX files.
    """
    try:
        if image_side(processed_dir) == 28:
            tr, va, te = (load_split(processed_dir, name) for name in ("train", "val", "test"))
            if len(tr) + len(va) == N_TRAIN and len(te) == N_TEST:
                joined = Split(np.concatenate([tr.images, va.images]), np.concatenate([tr.labels, va.labels]))
                return joined, te, f"{processed_dir} (train {len(tr)} + val {len(va)} joined)"
    except (FileNotFoundError, KeyError, ValueError):
        pass
    train_raw, test_raw = load_raw(raw_dir)
    return (Split(flatten(train_raw.images), train_raw.labels), Split(flatten(test_raw.images), test_raw.labels),
            f"{raw_dir} (load_raw + flatten)")


def ours_model(kind: str, W: torch.Tensor, lr: float):
    """``(net, step)`` of the ``kind`` model from weights ``W`` on the cross-entropy, as its train stage builds it
    (pipeline/train_scratch.py, pipeline/train_concise.py)."""
    if kind == "scratch":
        return scratch.trainer(W, 0.0, *losses.LOSSES["cross_entropy"])[:2]
    return concise.trainer(W, lr, 0.0, "cross_entropy")[:2]


def run_ours(kind: str, processed_dir: Path, raw_dir: Path, run: Run, epochs: int, batch_size: int, lr: float,
             seed: int) -> str:
    t0 = time.perf_counter()
    train_split, test_split, source = load_ours(processed_dir, raw_dir)
    generator = torch.Generator().manual_seed(seed)
    W = initial_weights(N_INPUTS, N_OUTPUTS, 0.01, generator)
    net, step = ours_model(kind, W, lr)
    batches = ShuffledBatches(train_split.images, train_split.labels, batch_size, generator)
    test_X, test_y = scale_pixels(test_split.images), to_labels(test_split.labels)
    run.setup_s.append(time.perf_counter() - t0)

    marks = [time.perf_counter()]

    def on_epoch(record):
        marks.append(time.perf_counter())
        log.info("%s epoch %d: %.3f s, train loss %.4f, train acc %.4f, test acc %.4f", run.name, record.epoch,
                 marks[-1] - marks[-2], record.train_loss, record.train_acc, record.val_acc)

    history = train(net, step, batches, test_X, test_y, [lr] * epochs, kind, progress=False, on_epoch=on_epoch)
    run.epoch_s.append([b - a for a, b in zip(marks, marks[1:])])
    run.train_loss.append(history[-1].train_loss)
    run.test_acc.append(history[-1].val_acc)
    return source


# --- peak RSS of a real train stage ---------------------------------------------------------------

@dataclass
class StageRss:
    kind: str
    returncode: int
    wall_s: float
    maxrss_mb: float      # the kernel's high-water mark for this child (wait4 rusage)
    sampled_mb: float     # the highest RSS psutil saw while polling (a cross-check; 0 without psutil)
    last_line: str


def measure_train_stage(kind: str, processed_dir: Path, tmp: Path) -> StageRss:
    """`python -m pipeline train_{kind} --no-progress` in a scratch copy of the layout it reads and writes."""
    try:
        import psutil
    except ImportError:  # only the cross-check needs it
        psutil = None
    work = tmp / f"stage_{kind}"
    (work / "data").mkdir(parents=True)
    (work / "data" / "processed").symlink_to(processed_dir.resolve())
    shutil.copy2(PROJECT_ROOT / "params.yaml", work / "params.yaml")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    # The stage logs to MLflow: keep its runs (and artifacts, resolved from DVC_ROOT or the cwd) in the scratch copy.
    env.pop("DVC_ROOT", None)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    stderr_path = work / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", f"train_{kind}", "--no-progress"],
                                cwd=work, env=env, stdout=stderr, stderr=subprocess.STDOUT)
        watched = psutil.Process(proc.pid) if psutil else None
        sampled = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if watched is not None:
                try:
                    sampled = max(sampled, watched.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = stderr_path.read_text(errors="replace").strip().splitlines()
    return StageRss(kind, proc.returncode, wall, usage.ru_maxrss / 1024, sampled / 2**20,
                    lines[-1] if lines else "")


# --- report ---------------------------------------------------------------------------------------

def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def print_table(runs: dict[str, Run], epochs: int, repeats: int) -> None:
    header = (f"{'run':<16} {'epoch mean s':>12} {'epoch min s':>11} {'epoch max s':>11} "
              f"{f'total {epochs} ep s':>14} {'min total s':>11} {'setup s':>8} {'train loss':>10} {'test acc':>9}")
    print(header)
    print("-" * len(header))
    for run in runs.values():
        total = statistics.fmean(run.totals)
        accs = sorted(set(round(a, 4) for a in run.test_acc))
        acc = f"{accs[0]:.4f}" if len(accs) == 1 else f"{accs[0]:.4f}-{accs[-1]:.4f}"
        print(f"{run.name:<16} {run.mean_epoch:>12.3f} {min(run.all_epochs):>11.3f} {max(run.all_epochs):>11.3f} "
              f"{total:>14.2f} {min(run.totals):>11.2f} {statistics.fmean(run.setup_s):>8.2f} "
              f"{statistics.fmean(run.train_loss):>10.4f} "
              f"{acc:>9}")
    if repeats > 1:
        print(f"(epoch columns over {repeats} repeats x {epochs} epochs; total, setup and train loss are means "
              f"over repeats)")
    ratios = [(kind, runs[f"chapter-{kind}"], runs[f"ours-{kind}"]) for kind in KINDS
              if f"chapter-{kind}" in runs and f"ours-{kind}" in runs]
    if ratios:
        print()
        print(f"{'speed ratio chapter/ours':<26} {'epoch mean':>10} {'epoch min':>10} {'total':>8}")
        for kind, chapter, ours in ratios:
            print(f"{kind:<26} {chapter.mean_epoch / ours.mean_epoch:>9.1f}x "
                  f"{min(chapter.all_epochs) / min(ours.all_epochs):>9.1f}x "
                  f"{statistics.fmean(chapter.totals) / statistics.fmean(ours.totals):>7.1f}x")
    print_targets(runs, epochs)


LOOP_TARGET_S = 1.0     # 10 epochs of ours, min over repeats
RATIO_TARGET = 35.0     # chapter / ours, mean totals of the same run


def print_targets(runs: dict[str, Run], epochs: int) -> None:
    """Each of ours against the targets: 10 epochs in <= 1.0 s (min over repeats), >= 35x the chapter's loop."""
    if epochs != 10:
        return
    print()
    for kind in KINDS:
        ours = runs.get(f"ours-{kind}")
        if ours is None:
            continue
        best = min(ours.totals)
        line = f"ours-{kind}: 10 epochs in {best:.2f} s (target <= {LOOP_TARGET_S:.1f} s: " \
               f"{'meets' if best <= LOOP_TARGET_S else 'MISSES'})"
        chapter = runs.get(f"chapter-{kind}")
        if chapter is not None:
            ratio = statistics.fmean(chapter.totals) / statistics.fmean(ours.totals)
            line += f"; {ratio:.1f}x the chapter (target >= {RATIO_TARGET:.0f}x: " \
                    f"{'meets' if ratio >= RATIO_TARGET else 'MISSES'})"
        print(line)


def print_rss(results: list[StageRss]) -> None:
    print()
    print(f"{'train stage (subprocess)':<34} {'exit':>4} {'wall s':>7} {'peak RSS MB':>11} {'sampled MB':>10}")
    for r in results:
        print(f"{'pipeline train_' + r.kind:<34} {r.returncode:>4} {r.wall_s:>7.1f} {r.maxrss_mb:>11.0f} "
              f"{r.sampled_mb:>10.0f}")
        print(f"    {r.last_line}")


def project_path(value: str) -> Path:
    """A relative path is taken from the project root, so the script runs from any directory."""
    path = Path(value)
    return path if path.is_absolute() else PROJECT_ROOT / path


@click.command(help=__doc__)
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1), help="Epochs per run.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="Run every configuration this many times (interleaved) and pool the epoch times.")
@click.option("--skip-chapter", is_flag=True, help="Only run ours (no chapter loop, no ratios).")
@click.option("--skip-rss", is_flag=True, help="Do not run the train stage subprocesses for peak RSS.")
@click.option("--data-dir", default="data/raw", show_default=True,
              help="The four decompressed IDX files (relative to the project root).")
@click.option("--processed-dir", default="data/processed", show_default=True,
              help="Preprocessed splits, used by ours when present and by the RSS runs (relative to the project root).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("--workers", default=4, show_default=True, type=click.IntRange(min=0),
              help="DataLoader workers of the chapter's loop (the chapter's get_dataloader_workers).")
@click.option("--seed", default=0, show_default=True, type=int, help="torch.manual_seed / our generator seed.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="torch intra-op threads for our loop; 1 is what the train stages use (0: torch's default).")
@click.option("--chapter-threads", default=0, show_default=True, type=click.IntRange(min=0),
              help="torch intra-op threads for the chapter's loop (0: torch's default, as the chapter runs).")
@click.option("-v", "--verbose", is_flag=True, help="Log every epoch.")
def main(epochs: int, repeats: int, skip_chapter: bool, skip_rss: bool, data_dir: str, processed_dir: str,
         batch_size: int, lr: float, workers: int, seed: int, threads: int, chapter_threads: int,
         verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s",
                        stream=sys.stderr)
    # Two warnings the chapter's code draws from this torch on this machine, on every run: 4 workers on 2
    # cores (the chapter's choice), and float() of its loss that still requires grad (its Accumulator).
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")
    raw_dir, processed = project_path(data_dir).resolve(), project_path(processed_dir)
    missing = [name for name in RAW_FILES if not (raw_dir / name).is_file()]
    if missing:
        raise click.ClickException(f"{raw_dir} lacks {', '.join(missing)}; run `dvc repro fetch` first")

    default_threads = torch.get_num_threads()
    run_threads = {"chapter": chapter_threads or default_threads, "ours": threads or default_threads}
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, torch threads: chapter {run_threads['chapter']}, ours {run_threads['ours']}")
    print(f"epochs {epochs}, repeats {repeats}, batch {batch_size}, lr {lr}, seed {seed}, "
          f"chapter DataLoader workers {workers}")
    print(f"load average at start: {load_average()}")

    runs: dict[str, Run] = {}
    names = ([] if skip_chapter else [f"chapter-{k}" for k in KINDS]) + [f"ours-{k}" for k in KINDS]
    for name in names:
        runs[name] = Run(name)
    source = None
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp_name:
        tmp = Path(tmp_name)
        root = None if skip_chapter else chapter_layout(raw_dir, tmp)
        for rep in range(repeats):
            for name in names:
                side, kind = name.split("-")
                click.echo(f"[{rep + 1}/{repeats}] {name} ...", err=True)
                torch.set_num_threads(run_threads[side])
                if side == "chapter":
                    run_chapter(kind, root, runs[name], epochs, batch_size, lr, workers, seed)
                else:
                    source = run_ours(kind, processed, raw_dir, runs[name], epochs, batch_size, lr, seed)
        print(f"ours read: {source}; chapter read: {raw_dir} via torchvision.datasets.FashionMNIST")
        print(f"load average after training: {load_average()}")
        print()
        print_table(runs, epochs, repeats)

        if not skip_rss:
            if not (processed / "meta.json").is_file():
                print(f"\n(no {processed}: skipping the train stage RSS runs; run `dvc repro preprocess`)")
            else:
                results = []
                for kind in KINDS:
                    click.echo(f"pipeline train_{kind} (peak RSS) ...", err=True)
                    results.append(measure_train_stage(kind, processed, tmp))
                print_rss(results)
                if any(r.returncode for r in results):
                    sys.exit(1)


if __name__ == "__main__":
    main()
