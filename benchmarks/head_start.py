"""The head start, measured: how much does a pre-trained backbone buy at N labelled images per class?

Methods (all through Headstart's own `steps.train.run` / engine, except the probe's logistic regression):
  finetune  EfficientNet-Lite0, ImageNet weights, 1 head-only epoch then full fine-tuning (params.yaml recipe)
  scratch   the same architecture and budget from random init
  small_cnn a right-sized 3-block CNN at native 28 px grayscale, trained to convergence (many more epochs)
  probe     logistic regression on frozen pre-trained EfficientNet-Lite0 features (64 px)
Each is scored on one fixed stratified test subset (`--test-per-class`, default 200/class = 2,000 images), with
and without horizontal-flip test-time augmentation. Validation (best-epoch choice) uses min(N, 100) per class.

    python benchmarks/head_start.py                                  # reduced grid: 10,100,500 x 1 seed
    python benchmarks/head_start.py --sizes 10 25 100 500 --seeds 42 43 44   # the full grid (hours on 2 cores)
    python benchmarks/head_start.py --recipes                        # champion recipe candidates at 100/class
    python benchmarks/head_start.py --plot-only                      # redraw the plots from the JSON
    python benchmarks/head_start.py --sizes 100 --seeds 42 43 44 --methods finetune \
        --training-recipes start_decay_all unfreeze_no_norm_decay --out benchmarks/results/head_start_warmup_decay.json
                                     # two warm-up / weight-decay recipes in the same run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: robust on a shared CPU

import torch  # noqa: E402

from headstart.data.imagefolder import Split, list_classes, load_split  # noqa: E402
from headstart.models import modelio  # noqa: E402
from headstart.presets import Preset  # noqa: E402
from headstart.steps import train  # noqa: E402
from headstart.training.engine import predict_logits  # noqa: E402
from headstart.training.recipe import TrainConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"
METHODS = ("probe", "small_cnn", "finetune", "scratch")
# Epoch budget per images/class: the same for finetune and scratch; the small CNN trains to convergence.
EPOCHS = {10: 40, 25: 24, 100: 12, 500: 6}
CNN_EPOCHS = {10: 150, 25: 100, 100: 60, 500: 30}
# Champion candidates at 100/class: (name, overrides of the params.yaml finetune recipe).
RECIPES: list[tuple[str, dict[str, Any]]] = [
    ("default_64px_12ep", {}),
    ("96px_20ep", {"image_size": 96, "epochs": 20}),
    ("128px_12ep", {"image_size": 128}),
    ("96px_20ep_no_early_stop", {"image_size": 96, "epochs": 20, "patience": 20}),  # the full cosine schedule
    ("96px_12ep_no_early_stop", {"image_size": 96, "patience": 12}),
]


# Training recipes a run can compare (--training-recipes): knobs over params.yaml's train section.
TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "params": {},
    # the LR warm-up from step 0 (spent in the head-only probe epoch), weight decay on norm and bias too
    "start_decay_all": {"warmup_from": "start", "decay_norm_bias": True},
    # the backbone's warm-up from its unfreeze, no weight decay on norm and bias (timm, torchvision references)
    "unfreeze_no_norm_decay": {"warmup_from": "unfreeze", "decay_norm_bias": False},
}


def _epochs(table: dict[int, int], n: int) -> int:
    """The budget for n images/class (0 = the full split: the largest size's budget)."""
    return table.get(n, min(table.values()) if n == 0 or n > max(table) else max(table.values()))


def _score(model: torch.nn.Module, preset: Preset, test: Split) -> dict[str, float]:
    """Accuracy on the test subset, plain and with flip TTA (mean of softmax over x and its mirror)."""
    plain = predict_logits(model, preset, test.x).softmax(1)
    flipped = predict_logits(model, preset, test.x.flip(2)).softmax(1)
    return {
        "accuracy": float((plain.argmax(1) == test.y).float().mean()),
        "accuracy_flip_tta": float(((plain + flipped).argmax(1) == test.y).float().mean()),
    }


class Bench:
    def __init__(self, data: Path, test_per_class: int, work: Path) -> None:
        self.data, self.work, self.test_per_class = data, work, test_per_class
        self.classes = list_classes(data)
        self._tests: dict[Preset, Split] = {}

    def test(self, preset: Preset) -> Split:
        if preset not in self._tests:
            self._tests[preset] = load_split(self.data, "test", preset, self.classes, self.test_per_class, 0)
        return self._tests[preset]

    def trained(self, name: str, cfg: TrainConfig) -> dict[str, Any]:
        out = self.work / name
        start = time.perf_counter()
        res = train.run(cfg, self.data, out)
        wall = time.perf_counter() - start
        model, card = modelio.load(out / "model")
        scores = _score(model, card.preset, self.test(card.preset))
        return {
            **scores,
            "train_wall_s": round(wall, 1),
            "fit_s": round(res.seconds, 1),
            "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch,
            "best_val_accuracy": res.best_val_accuracy,
        }

    def probe(self, n: int, seed: int) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from headstart.models import build_model

        start = time.perf_counter()
        torch.manual_seed(seed)
        built = build_model("efficientnet_lite0", "imagenet", len(self.classes))
        built.model.reset_classifier(0)  # type: ignore[operator]
        preset = Preset(64, 3, built.mean, built.std)
        tr = load_split(self.data, "train", preset, self.classes, n or None, seed)
        va = load_split(self.data, "val", preset, self.classes, _val_per_class(n), seed)
        feats = {k: predict_logits(built.model, preset, s.x).numpy() for k, s in (("train", tr), ("val", va))}
        scaler = StandardScaler().fit(feats["train"])
        best: tuple[float, float, Any] = (-1.0, 0.0, None)
        for c in (0.01, 0.1, 1.0):  # C chosen on the validation subset
            clf = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(feats["train"]), tr.y.numpy())
            acc = float(clf.score(scaler.transform(feats["val"]), va.y.numpy()))
            best = max(best, (acc, c, clf), key=lambda t: t[0])
        wall = time.perf_counter() - start
        test, clf = self.test(preset), best[2]
        y = test.y.numpy()
        p = clf.predict_proba(scaler.transform(predict_logits(built.model, preset, test.x).numpy()))
        q = clf.predict_proba(scaler.transform(predict_logits(built.model, preset, test.x.flip(2)).numpy()))
        out = {
            "accuracy": float((p.argmax(1) == y).mean()),
            "accuracy_flip_tta": float(((p + q).argmax(1) == y).mean()),
        }
        return {
            **out,
            "train_wall_s": round(wall, 1),
            "fit_s": round(wall, 1),
            "C": best[1],
            "best_val_accuracy": best[0],
        }

    def run(self, method: str, n: int, seed: int, recipe: str = "params") -> dict[str, Any]:
        if method == "probe":
            return self.probe(n, seed)
        common: dict[str, Any] = {
            **TRAINING_RECIPES[recipe],
            "images_per_class": n or None,
            "val_images_per_class": _val_per_class(n),
            "seed": seed,
            "threads": torch.get_num_threads(),
            "checkpoint_dir": None,
        }
        if method == "small_cnn":
            epochs = _epochs(CNN_EPOCHS, n)
            cfg = train.config_from_params(
                _params(),
                "scratch",
                backbone="small_cnn",
                weights=None,
                image_size=28,
                channels=1,
                epochs=epochs,
                patience=epochs,
                lr_head=3e-3,
                lr_backbone=3e-3,
                **common,
            )
        else:
            epochs = _epochs(EPOCHS, n)
            pre = method == "finetune"
            cfg = train.config_from_params(  # params.yaml's recipe for the role, with this run's budget
                _params(),
                "finetune" if pre else "scratch",
                weights="imagenet" if pre else None,
                epochs=epochs,
                patience=epochs,
                probe_epochs=1 if pre else 0,
                lr_backbone=1e-3 if pre else 3e-3,
                **common,
            )
        return {**self.trained(f"{method}-{recipe}-{n}-{seed}", cfg), "epochs": epochs, "image_size": cfg.image_size}


def _val_per_class(n: int) -> int:
    return 100 if n == 0 else min(n, 100)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r.get("recipe", "params"), r["images_per_class"]), []).append(r)
    out = []
    for (method, recipe, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][2], METHODS.index(kv[0][0]),
                                                                          kv[0][1])):
        accs = [r["accuracy"] for r in rs]
        out.append(
            {
                "method": method,
                "recipe": recipe,
                "images_per_class": n,
                "seeds": len(rs),
                "accuracy_mean": round(statistics.mean(accs), 4),
                "accuracy_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                "accuracy_flip_tta_mean": round(statistics.mean(r["accuracy_flip_tta"] for r in rs), 4),
                "train_wall_s_mean": round(statistics.mean(r["train_wall_s"] for r in rs), 1),
            }
        )
    return out


def plot(summary: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, recipe in [(m, r) for m in METHODS for r in TRAINING_RECIPES]:
        rs = [s for s in summary if s["method"] == method and s.get("recipe", "params") == recipe]
        if not rs:
            continue
        label = method if recipe == "params" else f"{method} ({recipe})"
        ns = [s["images_per_class"] or 5499 for s in rs]  # 0 = the full split (~5,499/class)
        acc = [100 * s["accuracy_mean"] for s in rs]
        a.errorbar(ns, acc, yerr=[100 * s["accuracy_std"] for s in rs], marker="o", capsize=3, label=label)
        b.plot([s["train_wall_s_mean"] for s in rs], acc, marker="o", label=label)
        for s, y in zip(rs, acc, strict=True):
            b.annotate(str(s["images_per_class"]), (s["train_wall_s_mean"], y), fontsize=7)
    a.set(
        xscale="log",
        xlabel="labelled training images per class",
        ylabel="test accuracy (%)",
        title="Accuracy vs labelled data",
    )
    b.set(
        xscale="log",
        xlabel="training wall time (s, 2 CPU threads)",
        ylabel="test accuracy (%)",
        title="Accuracy vs training time (labels: images/class)",
    )
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500], help="images/class; 0 = full split")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--test-per-class", type=int, default=200, help="fixed stratified test subset; 0 = all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--training-recipes", nargs="+", default=["params"], choices=list(TRAINING_RECIPES),
                    help="train each method with each of these recipes (params: params.yaml as it is)")
    ap.add_argument("--recipes", action="store_true", help="champion recipe candidates at 100/class instead")
    ap.add_argument("--recipe", nargs="+", default=None, help="run only these recipes; rows merge into the JSON")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or RESULTS / ("head_start_recipes.json" if args.recipes else "head_start.json")
    if args.plot_only:
        plot(json.loads(out.read_text())["summary"], out.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    meta = {
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "test_images": None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_avg_start": os.getloadavg(),
    }
    rows: list[dict[str, Any]] = []
    if args.recipes and args.recipe and out.is_file():  # keep the other recipes' rows
        rows = [r for r in json.loads(out.read_text())["runs"] if r["method"] not in args.recipe]
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args.data, args.test_per_class or None, Path(tmp))  # type: ignore[arg-type]
        jobs: list[tuple[str, int, int, TrainConfig | None, str]] = []
        if args.recipes:
            for name, over in [r for r in RECIPES if args.recipe is None or r[0] in args.recipe]:
                cfg = train.config_from_params(_params(), "finetune", **over, threads=args.threads,
                                               checkpoint_dir=None)
                jobs += [(name, cfg.images_per_class or 0, seed, cfg, "params") for seed in args.seeds]
        else:
            jobs = [(m, n, s, None, r) for n in args.sizes for s in args.seeds for m in args.methods
                    for r in args.training_recipes]
        for method, n, seed, cfg, recipe in jobs:
            if cfg is not None:
                cfg = cfg.model_copy(update={"seed": seed})
                row = {**bench.trained(f"{method}-{seed}", cfg), "image_size": cfg.image_size, "epochs": cfg.epochs}
            else:
                row = bench.run(method, n, seed, recipe)
            row = {"method": method, "recipe": recipe, "images_per_class": n, "seed": seed, **row,
                   "load_avg": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            meta["test_images"] = len(next(iter(bench._tests.values())).y)
            summary = summarise(rows) if not args.recipes else rows
            out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2) + "\n")
    if not args.recipes:
        plot(summarise(rows), out.with_suffix(".png"))
    print(f"wrote {out}")


def _params() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path("params.yaml").read_text())


if __name__ == "__main__":
    main()
