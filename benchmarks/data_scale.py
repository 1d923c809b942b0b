"""Data at scale (issues 16 and 21): memory and time-to-first-step flat in N on both dataset forms (an
ImageFolder and its shards), the bytes a per-class subset reads per epoch, the loader against the training
step, DVC push/pull of an ImageFolder against its shards, and the default-size run against today's code.

Synthetic ImageFolders of random JPEGs (10 classes named like Fashion-MNIST's, so params.yaml's label set
holds; a smooth random field + a class-specific stripe pattern + pixel noise, so no two images are near
duplicates), generated in parallel from a fixed seed and cached under .headstart/bench/data_scale/
(reruns reuse them; only folders this script marked as its own are ever replaced), packed once with
`headstart data pack`. Each measured command runs as a fresh subprocess (`headstart ...` with
PYTHONPATH=<this tree>/src, so it runs this tree's code); its peak memory is sampled every 200 ms over the
whole process tree (the command and its DataLoader/validation workers): the peak of the summed RSS, and of
the summed PSS (/proc/<pid>/smaps_rollup: shared pages split between the processes that share them, so
forked workers' torch pages are not counted twice). Ratios compare the large run with the small one of the
same form in the same run. data_loading is `auto` (params.yaml's) with memory_budget_gib 2 at 96 px
(params.yaml's size): 5,000 images (138 MB decoded) stay in memory, 120,000 (3.1 GiB) and the 100,000-image
test split (2.6 GiB) stream; each row records the mode auto picks (and the loader workers seen).

    python benchmarks/data_scale.py --quick        # 500 vs 5,000, budget 0.1 GiB: ~15 min on 2 cores
    python benchmarks/data_scale.py                # 5,000 vs 120,000 (eval 5,000 vs 100,000), both forms
    python benchmarks/data_scale.py --parts loader dvc --out benchmarks/results/data_scale.json
    python benchmarks/data_scale.py --parts dvc --dvc-files 100000 --out benchmarks/results/data_scale.json
    python benchmarks/data_scale.py --parts default --default-size --out benchmarks/results/data_scale.json

Parts: train, evaluate, validate (the pairs, per form), subset (100 per class of the large set, streamed:
bytes read per epoch), loader, dvc, default (only with --default-size). A run of some parts merges its
results into the existing JSON (default results/data_scale_forms.json, and its .png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("HEADSTART_NO_PROGRESS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULT = Path(__file__).parent / "results" / "data_scale_forms.json"
PLOT = RESULT.with_suffix(".png")
CACHE = REPO / ".headstart" / "bench" / "data_scale"
MARK = "bench.json"  # marks a folder this script wrote (and may replace)
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
GEN_VERSION = 1
BATCH = 64  # params.yaml's train.shared.batch_size


# ---- synthetic data -------------------------------------------------------------------------------------

def _image(split: str, index: int, size: int, seed: int) -> np.ndarray:
    """One RGB image, a pure function of (split, index, size, seed); its class is index % 10."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index, size])
    cls = index % len(CLASSES)
    low = np.asarray(Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).resize(
        (size, size), Image.BILINEAR), dtype=np.float32) / 255
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = np.pi * cls / len(CLASSES)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (2 + cls) * (xx * np.cos(angle) + yy * np.sin(angle)))
    img = 0.1 + 0.45 * low + 0.3 * stripes[..., None] + rng.normal(0, 0.06, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _write_chunk(job: tuple[str, str, int, int, int, int]) -> int:
    root, split, start, stop, size, seed = job
    for i in range(start, stop):
        path = Path(root) / split / CLASSES[i % len(CLASSES)] / f"img_{i:07d}.jpg"
        Image.fromarray(_image(split, i, size, seed)).save(path, quality=90)
    return stop - start


def _mark(folder: Path) -> Path:
    """The marker beside a folder (inside it, the validator would see a stray file)."""
    return folder.with_name(folder.name + "." + MARK)


def _owned(folder: Path, spec: dict[str, Any]) -> bool:
    """True if `folder` holds a complete copy made with `spec`; replaces an incomplete or other-spec folder
    this script made; refuses a folder it did not make."""
    mark = _mark(folder)
    if mark.exists():
        if json.loads(mark.read_text()) == {**spec, "complete": True}:
            return True
        shutil.rmtree(folder, ignore_errors=True)
        mark.unlink(missing_ok=True)
    elif folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"data_scale: {folder} exists and was not made by this benchmark; move it or pick "
                         "another --cache")
    return False


def imagefolder(name: str, counts: dict[str, int], size: int, seed: int, workers: int) -> Path:
    """The ImageFolder `CACHE/name` with `counts` images per split, generated once (in parallel)."""
    root = CACHE / name
    spec = {"kind": "imagefolder", "counts": counts, "size": size, "seed": seed, "version": GEN_VERSION}
    if _owned(root, spec):
        return root
    t = time.perf_counter()
    for split in counts:
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
    _mark(root).write_text(json.dumps(spec))
    step = 500
    jobs = [(str(root), split, a, min(a + step, n), size, seed) for split, n in counts.items()
            for a in range(0, n, step)]
    with mp.get_context("fork").Pool(workers) as pool:
        done = sum(pool.imap_unordered(_write_chunk, jobs))
    _mark(root).write_text(json.dumps({**spec, "complete": True}))
    print(f"  generated {root.name}: {done} images in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return root


def packed(src: Path, shard_size: str = "256MB") -> tuple[Path, float | None]:
    """`headstart data pack` of `src` into `<src>-shards` (once); the pack's wall time when it ran now."""
    out = src.with_name(src.name + "-shards")
    spec = {"kind": "shards", "src": src.name, "shard_size": shard_size, "version": GEN_VERSION}
    if _owned(out, spec):
        return out, None
    t = time.perf_counter()
    subprocess.run([str(BIN / "headstart"), "data", "pack", "--data", str(src), "--out", str(out),
                    "--shard-size", shard_size], check=True, env=_env())
    _mark(out).write_text(json.dumps({**spec, "complete": True}))
    seconds = time.perf_counter() - t
    print(f"  packed {src.name}: {seconds:.1f}s", file=sys.stderr)
    return out, round(seconds, 1)


# ---- measuring a command ------------------------------------------------------------------------------

def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HEADSTART_NO_PROGRESS": "1", "OMP_WAIT_POLICY": "PASSIVE", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    env["PYTHONPATH"] = str(REPO / "src")  # this tree's code, whatever the venv's editable install points at
    env.update(extra)
    return env


def measured(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 3600,
             sample: bool = True) -> dict[str, Any]:
    """Run `cmd`; wall time and peak memory of its process tree, sampled every 200 ms (`sample`: off where the
    sampler's own reads of /proc would count in this process's I/O). Every 50 ms, the reads of smaps_rollup
    took half a core beside a 3 GB process, slowing the command they measure."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd / f"{Path(cmd[0]).name}-{uuid.uuid4().hex[:6]}.log"
    peak = {"rss": 0, "pss": 0, "main_rss": 0, "processes": 1}
    stop = threading.Event()
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)

        def sampler() -> None:
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    rss = main = pss = 0
                    for p in tree:
                        with contextlib.suppress(psutil.Error):
                            r = p.memory_info().rss
                            rss += r
                            pss += _pss(p.pid)
                            main = r if p.pid == proc.pid else main
                    peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
                    peak["main_rss"] = max(peak["main_rss"], main)
                    peak["processes"] = max(peak["processes"], len(tree))
                except psutil.Error:
                    pass
                stop.wait(0.2)

        thread = threading.Thread(target=sampler, daemon=True)
        if sample:
            thread.start()
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        stop.set()
        if sample:
            thread.join()
    wall = time.perf_counter() - t0
    tail = log.read_text(errors="replace")[-1500:]
    if rc != 0:
        print(f"  ! {' '.join(cmd[:3])} exited {rc}; log {log}:\n{tail}", file=sys.stderr)
    memory = {"peak_tree_rss_mib": round(peak["rss"] / 2**20, 1), "peak_tree_pss_mib": round(peak["pss"] / 2**20, 1),
              "peak_main_rss_mib": round(peak["main_rss"] / 2**20, 1), "max_processes": peak["processes"]}
    return {"rc": rc, "wall_s": round(wall, 2), **(memory if sample else {}),
            "log": str(log.relative_to(REPO)) if log.is_relative_to(REPO) else str(log),
            **({"log_tail": tail} if rc != 0 else {})}


def _fresh(path: Path) -> Path:
    """A run folder under CACHE/runs (ours): emptied before each run so nothing resumes or is reused."""
    assert path.is_relative_to(CACHE)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(b / a, 3) if a and b is not None else None


def _pair(rows: dict[str, dict[str, Any]], key: str) -> float | None:
    return _ratio(rows["small"].get(key), rows["large"].get(key))


# ---- the pairs: train, evaluate, validate, each on each form ----------------------------------------------

FORMS = ("imagefolder", "packed")


def datasets(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out = {}
    for label, n_train, n_test in (("small", args.small, args.eval_small), ("large", args.large, args.eval_large)):
        counts = {"train": n_train, "val": args.val, "test": n_test}
        folder = imagefolder(f"if-{n_train}-{args.val}-{n_test}-{args.image_size}px", counts, args.image_size,
                             args.seed, args.gen_workers)
        shards, pack_s = packed(folder) if "packed" in args.forms else (None, None)
        index = json.loads((shards / "index.json").read_text()) if shards else None
        out[label] = {"imagefolder": folder, "packed": shards, "counts": counts, "pack_s": pack_s,
                      "shard_files": sum(len(s["shards"]) for s in index["splits"].values()) if index else None,
                      "bytes": {form: {split: sum(f.stat().st_size for f in split_files(root, form, split))
                                       for split in counts} for form, root in (("imagefolder", folder),
                                                                               ("packed", shards)) if root}}
    return out


def split_files(root: Path, form: str, split: str) -> list[Path]:
    """The files holding `split`: its images (an ImageFolder) or its shards (index.json's list)."""
    if form == "imagefolder":
        return sorted(p for p in (root / split).rglob("*") if p.is_file())
    index = json.loads((root / "index.json").read_text())
    return [root / s["file"] for s in index["splits"][split]["shards"]]


def loading_mode(loading: str, n: int, image_size: int, budget_gib: float, channels: int = 3) -> str:
    """What the step does with a split of `n` images: headstart.data.dataset.streams' rule (auto streams a split
    whose decoded uint8 size passes memory_budget_gib), restated here so the benchmark imports no moved module.
    The run's process count corroborates it: a streamed split adds a loader worker process."""
    if loading != "auto":
        return loading
    return "stream" if n * image_size * image_size * channels > budget_gib * 2**30 else "memory"


def train_sets(args: argparse.Namespace, runs: Path) -> list[str]:
    return ["--set", f"train.shared.max_steps={args.max_steps}", "--set", f"train.shared.data_loading={args.loading}",
            "--set", f"train.shared.memory_budget_gib={args.budget_gib}",
            "--set", "train.shared.images_per_class=null", "--set", "train.shared.tensor_cache_dir=null",
            "--set", f"train.finetune.image_size={args.image_size}",
            "--set", f"train.scratch.image_size={args.image_size}",
            "--set", f"train.shared.checkpoint_dir={runs / 'checkpoints'}"]


def _summarise(rows: dict[str, dict[str, Any]], time_key: str, n_key: str, targets: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rows": rows, "pss_ratio": _pair(rows, "peak_tree_pss_mib"), "rss_ratio": _pair(rows, "peak_tree_rss_mib"),
        "time": time_key, "time_ratio": _pair(rows, time_key), "wall_ratio": _pair(rows, "wall_s"),
        "n_ratio": _pair(rows, n_key), "targets": targets}
    out["met"] = {k: (out[k] is not None and out[k] <= v) for k, v in targets.items()}
    return out


def _print(what: str, row: dict[str, Any]) -> None:
    print(f"  {what}: {json.dumps({k: v for k, v in row.items() if k != 'log_tail'})}", file=sys.stderr)


def bench_train(args: argparse.Namespace, data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    forms = {}
    for form in args.forms:
        rows = {}
        for label in ("small", "large"):
            runs = _fresh(CACHE / "runs" / f"train-{form}-{label}")
            cmd = [str(BIN / "headstart"), "train", "finetune", "--data", str(data[label][form]),
                   "--out", str(runs / "finetune"), "--params", str(REPO / "params.yaml"), *train_sets(args, runs)]
            row = measured(cmd, runs, _env(MLFLOW_TRACKING_URI=f"sqlite:///{runs}/mlflow.db"))
            metrics = runs / "finetune" / "metrics.json"
            if metrics.exists():
                m = json.loads(metrics.read_text())
                row["first_step_seconds"] = round(m["first_step_seconds"], 2) if m.get("first_step_seconds") else None
                row["train_seconds"] = round(m["seconds"], 2)
            counts = data[label]["counts"]
            row["train_images"] = counts["train"]
            row["loading"] = {split: loading_mode(args.loading, counts[split], args.image_size, args.budget_gib)
                              for split in ("train", "val")}
            row["loader_workers_seen"] = row["max_processes"] - 1  # > 0: a split streamed (val stays in memory)
            rows[label] = row
            _print(f"train {form} {label}", row)
        forms[form] = _summarise(rows, "first_step_seconds", "train_images",
                                 {"pss_ratio": 1.3, "time_ratio": 1.5})
    return {"forms": forms}


def bench_evaluate(args: argparse.Namespace, data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    model = CACHE / "runs" / f"train-{args.forms[0]}-small" / "finetune" / "model"
    if not model.is_dir():
        runs = _fresh(CACHE / "runs" / "eval-model")
        cmd = [str(BIN / "headstart"), "train", "finetune", "--data", str(data["small"][args.forms[0]]),
               "--out", str(runs / "finetune"), "--params", str(REPO / "params.yaml"), *train_sets(args, runs)]
        measured(cmd, runs, _env(MLFLOW_TRACKING_URI=f"sqlite:///{runs}/mlflow.db"))
        model = runs / "finetune" / "model"
    forms = {}
    for form in args.forms:
        rows = {}
        for label in ("small", "large"):
            runs = _fresh(CACHE / "runs" / f"evaluate-{form}-{label}")
            # the same model as both candidates, a fresh prediction store (the default's store, empty): the split
            # is scored once and the second candidate's predictions are read back; what is measured is the test
            # split read (memory or streamed), not two models
            cmd = [str(BIN / "headstart"), "evaluate", "--data", str(data[label][form]), "--finetune", str(model),
                   "--scratch", str(model), "--out", str(runs / "evaluation"), "--params", str(REPO / "params.yaml"),
                   "--set", f"evaluate.prediction_store={runs / 'predictions'}",
                   "--set", "evaluate.tensor_cache_dir=null", "--set", f"evaluate.data_loading={args.loading}",
                   "--set", f"evaluate.memory_budget_gib={args.budget_gib}",
                   "--set", f"evaluate.bootstrap_samples={args.bootstrap}"]
            row = measured(cmd, runs, _env(MLFLOW_TRACKING_URI=f"sqlite:///{runs}/mlflow.db"))
            n = data[label]["counts"]["test"]
            row["test_images"] = n
            row["loading"] = {"test": loading_mode(args.loading, n, args.image_size, args.budget_gib)}
            row["loader_workers_seen"] = row["max_processes"] - 1  # > 0: the test split streamed
            row["wall_ms_per_image"] = round(1000 * row["wall_s"] / n, 2)
            rows[label] = row
            _print(f"evaluate {form} {label}", row)
        # no time to the first batch is logged or written by evaluate: the wall time (it scores every image)
        forms[form] = _summarise(rows, "wall_s", "test_images", {"pss_ratio": 1.3})
    return {"forms": forms, "model": str(model.relative_to(CACHE))}


def bench_validate(args: argparse.Namespace, data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    forms = {}
    for form in args.forms:
        rows = {}
        for label in ("small", "large"):
            runs = _fresh(CACHE / "runs" / f"validate-{form}-{label}")
            cmd = [str(BIN / "headstart"), "validate", "--data", str(data[label][form]), "--out",
                   str(runs / "report"), "--params", str(REPO / "params.yaml"), "--no-track",
                   "--set", "validate.cache_dir=null", "--set", f"validate.state_dir={runs / 'state'}",
                   "--set", f"validate.min_images_per_class={max(1, args.val // len(CLASSES))}"]
            row = measured(cmd, runs, _env())
            row["images"] = sum(data[label]["counts"].values())
            row["wall_ms_per_image"] = round(1000 * row["wall_s"] / row["images"], 2)
            report = runs / "report" / "report.json"
            if report.exists():
                rep = json.loads(report.read_text())
                row["passed"] = rep.get("passed", rep.get("success"))
            rows[label] = row
            _print(f"validate {form} {label}", row)
        # validation reads every image (it has no data_loading): the wall time, no first-batch time
        forms[form] = _summarise(rows, "wall_s", "images", {"pss_ratio": 1.3})
    return {"forms": forms}


# ---- a per-class subset of the large set: bytes read per epoch ---------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")


def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return libc


def evict(files: list[Path]) -> None:
    """Drop these files' pages from the page cache (POSIX_FADV_DONTNEED on clean pages; os.sync first), so that
    what the next run reads of them comes from the disk and shows in read_bytes and in `resident`."""
    os.sync()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident(files: list[Path]) -> dict[str, int]:
    """Bytes of these files in the page cache (mincore over a read-only mapping of each) and how many files
    have any: after `evict`, what a run read of them (page granular, with the kernel's readahead)."""
    import ctypes
    import mmap

    libc, total, touched = _libc(), 0, 0
    for f in files:
        size = f.stat().st_size
        if not size:
            continue
        pages = (size + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        fd = os.open(f, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), f"mmap {f}")
            try:
                if libc.mincore(addr, size, vec) != 0:
                    raise OSError(ctypes.get_errno(), f"mincore {f}")
            finally:
                libc.munmap(addr, size)
        finally:
            os.close(fd)
        bits = np.frombuffer(vec, dtype=np.uint8) & 1
        n = int(bits.sum())
        total += n * PAGE - (pages * PAGE - size if bits[-1] else 0)
        touched += n > 0
    return {"bytes": total, "files": touched}


def _io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f if line.strip())}


def bench_subset(args: argparse.Namespace, data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`train finetune` with images_per_class=args.subset (10 classes) streamed from the large set, one epoch
    and `subset_epochs` epochs, fresh checkpoint and tensor-cache folders each, the dataset's files evicted from
    the page cache before each run. Per run: rchar and read_bytes of the whole process tree (our own
    /proc/self/io around the run: a reaped child's counts are added to its parent's, so the command's and its
    loader workers' all arrive here), and, by mincore, the bytes of the dataset's train split in the page cache
    after it (= the distinct bytes read from it). Bytes read per epoch = (rchar(E epochs) - rchar(1)) / (E - 1):
    every read() an epoch makes, page-cache hits included (an epoch's re-reads of the subset are hits here
    but go to the storage on a real volume or bucket), the start-up's reads (imports, weights, listing, a
    packed subset's one-off copy) cancelled out."""
    large, k, epochs = data["large"], args.subset, args.subset_epochs
    val_k = max(1, args.subset // 10)
    forms = {}
    for form in args.forms:
        root = large[form]
        train_files, val_files = split_files(root, form, "train"), split_files(root, form, "val")
        split_bytes = large["bytes"][form]["train"]
        per_image = large["bytes"]["imagefolder"]["train"] / large["counts"]["train"]  # a JPEG's mean size
        runs_out: dict[str, Any] = {}
        for e in (1, epochs):
            runs = _fresh(CACHE / "runs" / f"subset-{form}-{e}ep")
            cmd = [str(BIN / "headstart"), "train", "finetune", "--data", str(root), "--out", str(runs / "finetune"),
                   "--params", str(REPO / "params.yaml"),
                   "--set", f"train.shared.images_per_class={k}", "--set", f"train.shared.val_images_per_class={val_k}",
                   "--set", f"train.shared.epochs={e}", "--set", f"train.shared.patience={e}",
                   "--set", "train.shared.max_steps=0", "--set", "train.shared.data_loading=stream",
                   "--set", f"train.shared.tensor_cache_dir={runs / 'tensors'}",
                   "--set", f"train.finetune.image_size={args.image_size}",
                   "--set", f"train.shared.checkpoint_dir={runs / 'checkpoints'}"]
            evict(train_files + val_files)
            before = _io()
            row = measured(cmd, runs, _env(MLFLOW_TRACKING_URI=f"sqlite:///{runs}/mlflow.db"), sample=False)
            after = _io()
            row["rchar"] = after["rchar"] - before["rchar"]
            row["read_bytes"] = after["read_bytes"] - before["read_bytes"]
            row["train_split_resident"] = resident(train_files)
            row["val_split_resident"] = resident(val_files)
            subsets = {}
            for idx in (runs / "tensors" / "subsets").glob("*/index.json"):  # a packed subset's one-off copy
                ix = json.loads(idx.read_text())
                for split, s in ix["splits"].items():
                    subsets[split] = {"images": s["count"], "bytes": sum(sh["bytes"] for sh in s["shards"])}
            if subsets:
                row["subset_copies"] = subsets
            runs_out[f"{e}_epochs"] = row
            _print(f"subset {form} {e} epoch(s)", row)
        one, many = runs_out["1_epochs"], runs_out[f"{epochs}_epochs"]
        per_epoch = (many["rchar"] - one["rchar"]) / (epochs - 1) if epochs > 1 else None
        val_image = large["bytes"]["imagefolder"]["val"] / large["counts"]["val"]
        subset_est = {"train": round(k * len(CLASSES) * per_image), "val": round(val_k * len(CLASSES) * val_image)}
        if "subset_copies" in one:  # the packed subset's own size on disk (tar headers included)
            subset_est = {s: v["bytes"] for s, v in one["subset_copies"].items()}
        forms[form] = {
            "runs": runs_out, "split_bytes": split_bytes, "split_images": large["counts"]["train"],
            "subset_images": k * len(CLASSES), "val_subset_images": val_k * len(CLASSES),
            "subset_bytes": subset_est,
            "read_per_epoch_bytes": round(per_epoch) if per_epoch is not None else None,
            "read_per_epoch_vs_subset": _ratio(subset_est["train"] + subset_est["val"], per_epoch),
            "read_per_epoch_vs_split": _ratio(split_bytes, per_epoch),
            "subset_vs_split": _ratio(split_bytes, subset_est["train"]),
            "first_run_train_split_read_vs_split": _ratio(split_bytes, one["train_split_resident"]["bytes"]),
        }
        print(f"  subset {form}: {json.dumps({k2: v for k2, v in forms[form].items() if k2 != 'runs'})}",
              file=sys.stderr)
    return {"forms": forms, "images_per_class": k, "val_images_per_class": val_k, "epochs": [1, epochs],
            "measure": "rchar and read_bytes from /proc/self/io around each run (children reaped into it); "
                       "resident: mincore after POSIX_FADV_DONTNEED before the run"}


# ---- the loader against the training step ---------------------------------------------------------------

def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    """224 px JPEGs: decode img/s in-process and through the stream with 1 and 2 workers, against the
    EfficientNet-Lite0 training step at 224 px on this CPU (batch 32, `--threads` threads)."""
    import torch

    from headstart.data import shards as shardlib
    from headstart.data import stream
    from headstart.models import build_model
    from headstart.presets import Preset

    n = args.loader_images
    folder = imagefolder(f"if-{n}-10-10-224px", {"train": n, "val": 10, "test": 10}, 224, args.seed, args.gen_workers)
    root, _ = packed(folder, "4MB")  # several shards, so two workers each get some
    index = shardlib.read_index(root)
    built = build_model("efficientnet_lite0", None, len(CLASSES))
    preset = Preset(224, 3, built.mean, built.std)
    out: dict[str, Any] = {"images": n, "shards": len(index.splits["train"].shards)}
    t, count = time.perf_counter(), 0
    for entry in index.splits["train"].shards:
        for sample in shardlib.iter_shard(root, entry, len(index.classes)):
            preset.decode(sample.data)
            count += 1
    out["in_process_images_per_s"] = round(count / (time.perf_counter() - t), 1)
    for workers in (1, 2):
        data = stream.open_split(str(root), "train", preset, seed=0, workers=workers)
        t, first, count = time.perf_counter(), None, 0
        for xb, _ in stream.epoch_batches(data, 0, 32, 0, 1, steps=0):
            count += len(xb)
            first = first or (time.perf_counter(), count)
        end = time.perf_counter()
        rate = (count - first[1]) / (end - first[0])
        out[f"stream_{workers}w"] = {"images_per_s": round(rate, 1), "per_worker_core": round(rate / workers, 1),
                                     "first_batch_s": round(first[0] - t, 2), "images": count}
    torch.set_num_threads(args.threads)
    model = built.model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randint(0, 256, (32, 224, 224, 3), dtype=torch.uint8)
    y = torch.randint(0, 10, (32,))
    times = []
    for i in range(args.train_steps + 2):
        t = time.perf_counter()
        loss = loss_fn(model(preset.normalize(x).contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - t)
    train_rate = 32 / statistics.median(times)
    out["train_step"] = {"arch": "efficientnet_lite0", "image_size": 224, "batch_size": 32, "threads": args.threads,
                         "images_per_s": round(train_rate, 1), "step_s": [round(s, 3) for s in times]}
    out["per_core_decode_vs_train"] = round(out["in_process_images_per_s"] / train_rate, 2)
    out["stream_1w_vs_train"] = round(out["stream_1w"]["images_per_s"] / train_rate, 2)
    print(f"  loader: {json.dumps(out)}", file=sys.stderr)
    return out


# ---- DVC at scale ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _moto(root: Path):
    sys.path.insert(0, str(REPO))
    from tests.integration.servers import moto_server, s3_env

    with moto_server(root) as url:
        yield url, s3_env(url)


def _dvc(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    out = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"dvc {' '.join(args)} in {cwd} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return round(time.perf_counter() - t, 2)


def bench_dvc(args: argparse.Namespace) -> dict[str, Any]:
    """`dvc push` then `dvc pull` (into a fresh checkout) of an N-file ImageFolder and of its shards."""
    import boto3

    n = args.dvc_files
    counts = {"train": n - 2 * (n // 10), "val": n // 10, "test": n // 10}
    folder = imagefolder(f"if-{counts['train']}-{counts['val']}-{counts['test']}-{args.image_size}px", counts,
                         args.image_size, args.seed, args.gen_workers)
    shards, _ = packed(folder)
    rows: dict[str, Any] = {}
    with _moto(_fresh(CACHE / "runs" / "moto")) as (url, s3):
        env = _env(**{k: v for k, v in s3.items() if not k.startswith("AWS_ENDPOINT")})
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        for kind, src in (("imagefolder", folder), ("shards", shards)):
            bucket = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
            client.create_bucket(Bucket=bucket)
            repo = _fresh(CACHE / "runs" / f"dvc-{kind}")
            _dvc(["init", "--no-scm", "-q"], repo, env)
            # the data lives in the repo as DVC expects; a copy with hard links costs no space or time to read
            shutil.copytree(src, repo / "data", copy_function=os.link)
            add_s = _dvc(["add", "-q", "data"], repo, env)
            _dvc(["remote", "add", "-d", "store", f"s3://{bucket}/dvcstore"], repo, env)
            _dvc(["remote", "modify", "store", "endpointurl", url], repo, env)
            push_s = _dvc(["push", "-q"], repo, env)
            clone = _fresh(CACHE / "runs" / f"dvc-{kind}-pull")
            _dvc(["init", "--no-scm", "-q"], clone, env)
            shutil.copy(repo / "data.dvc", clone / "data.dvc")
            shutil.copy(repo / ".dvc" / "config", clone / ".dvc" / "config")
            pull_s = _dvc(["pull", "-q"], clone, env)
            files = sum(1 for p in (clone / "data").rglob("*") if p.is_file())
            rows[kind] = {"files": files, "add_s": add_s, "push_s": push_s, "pull_s": pull_s}
            print(f"  dvc {kind}: {rows[kind]}", file=sys.stderr)
            shutil.rmtree(clone)
            shutil.rmtree(repo)
    return {"images": n, "rows": rows,
            "push_ratio_folder_vs_shards": _ratio(rows["shards"]["push_s"], rows["imagefolder"]["push_s"]),
            "pull_ratio_folder_vs_shards": _ratio(rows["shards"]["pull_s"], rows["imagefolder"]["pull_s"])}


# ---- the default size, new code vs today's --------------------------------------------------------------

def bench_default(args: argparse.Namespace) -> dict[str, Any]:
    """`headstart train finetune` and `scratch` with params.yaml's recipe on data/, this tree against the
    base worktree (PYTHONPATH=/tmp/base/src, its own params.yaml), interleaved; cold tensor caches and
    fresh checkpoint folders for both, so neither resumes or reuses the other's work."""
    base = Path(args.base)
    variants = {"new": (REPO, {}), "old": (base, {"PYTHONPATH": str(base / "src")})}
    order = [("finetune", "new"), ("finetune", "old"), ("scratch", "old"), ("scratch", "new")]
    rows: dict[str, dict[str, Any]] = {"new": {}, "old": {}}
    for role, name in order:
        tree, extra = variants[name]
        runs = _fresh(CACHE / "runs" / f"default-{name}-{role}")
        cmd = [sys.executable, "-m", "headstart.cli", "train", role, "--data", str(REPO / "data"),
               "--out", str(runs / role), "--params", str(tree / "params.yaml"),
               "--set", f"train.shared.checkpoint_dir={runs / 'ckpt'}",
               "--set", f"train.shared.tensor_cache_dir={runs / 'tensors'}"]
        env = _env(MLFLOW_TRACKING_URI=f"sqlite:///{runs}/mlflow.db", **extra)
        row = measured(cmd, runs, env)
        metrics = runs / role / "metrics.json"
        if metrics.exists():
            m = json.loads(metrics.read_text())
            row["best_val_accuracy"], row["train_seconds"] = m["best_val_accuracy"], round(m["seconds"], 2)
        rows[name][role] = row
        print(f"  default {name} {role}: {json.dumps({k: v for k, v in row.items() if k != 'log_tail'})}",
              file=sys.stderr)
    wall = {k: sum(r["wall_s"] for r in v.values()) for k, v in rows.items()}
    acc = {k: {role: r.get("best_val_accuracy") for role, r in v.items()} for k, v in rows.items()}
    return {"rows": rows, "wall_s": wall, "wall_ratio_new_vs_old": _ratio(wall["old"], wall["new"]),
            "val_accuracy_points_new_minus_old": {
                role: round(100 * (acc["new"][role] - acc["old"][role]), 2)
                for role in acc["new"] if acc["new"][role] is not None and acc["old"].get(role) is not None},
            "targets": {"wall_ratio": 1.05, "accuracy_points": 0.3}}


# ---- plot and main ---------------------------------------------------------------------------------------

def _forms(part: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A pair part's results per form (results written before --forms hold the packed form alone)."""
    return part.get("forms", {"packed": part})


def plot(result: dict[str, Any], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    styles = {"imagefolder": ("o", "-"), "packed": ("s", "--")}
    for i, (cmd, nkey) in enumerate((("train", "train_images"), ("evaluate", "test_images"), ("validate", "images"))):
        part, color = result.get(cmd), f"C{i}"
        if not part:
            continue
        for form, res in _forms(part).items():
            marker, line = styles.get(form, ("^", ":"))
            rows = [res["rows"]["small"], res["rows"]["large"]]
            ns = [r[nkey] for r in rows]
            modes = "/".join(r.get("loading", {}).get("train" if cmd == "train" else "test", "") for r in rows)
            axes[0].plot(ns, [r["peak_tree_pss_mib"] for r in rows], marker + line, color=color,
                         label=f"{cmd}, {form} (PSS x{res['pss_ratio']}" + (f", {modes})" if modes.strip("/") else ")"))
            if cmd == "train":
                if all(r.get("first_step_seconds") for r in rows):
                    ratio = res.get("time_ratio", res.get("first_step_ratio"))  # the issue-16 JSON's name
                    axes[1].plot(ns, [r["first_step_seconds"] for r in rows], marker + line, color=color,
                                 label=f"train, {form}: time to first step (x{ratio})")
            else:
                axes[1].plot(ns, [r["wall_s"] for r in rows], marker + line, color=color,
                             label=f"{cmd}, {form}: wall (x{res['wall_ratio']})")
    for ax, title in ((axes[0], "peak PSS of the process tree (MiB); legend: ratio, loading small/large"),
                      (axes[1], "seconds")):
        ax.set_xscale("log")
        ax.set_xlabel("images (N)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    subset, dvc = result.get("subset"), result.get("dvc")
    if subset:
        forms = list(subset["forms"])
        xs = np.arange(len(forms))
        mib = 2**20
        bars = (("whole train split on disk", lambda f: f["split_bytes"]),
                ("subset on disk (train + val)", lambda f: f["subset_bytes"]["train"] + f["subset_bytes"]["val"]),
                ("read per epoch (rchar)", lambda f: f["read_per_epoch_bytes"] or 0),
                ("train split read from disk, 1-epoch run",
                 lambda f: f["runs"]["1_epochs"]["train_split_resident"]["bytes"]))
        for j, (label, get) in enumerate(bars):
            axes[2].bar(xs + (j - 1.5) * 0.2, [get(subset["forms"][f]) / mib for f in forms], 0.2, label=label)
        axes[2].set_yscale("log")
        axes[2].set_xticks(xs, forms)
        f0 = subset["forms"][forms[0]]
        axes[2].set_title(f"{subset['images_per_class']} per class of {f0['split_images']:,} images, streamed: MiB",
                          fontsize=9)
        axes[2].legend(fontsize=7)
    elif dvc:
        kinds = list(dvc["rows"])
        xs = np.arange(len(kinds))
        axes[2].bar(xs - 0.2, [dvc["rows"][k]["push_s"] for k in kinds], 0.4, label="dvc push")
        axes[2].bar(xs + 0.2, [dvc["rows"][k]["pull_s"] for k in kinds], 0.4, label="dvc pull")
        axes[2].set_xticks(xs, [f"{k}\n({dvc['rows'][k]['files']} files)" for k in kinds])
        axes[2].set_title(f"DVC to moto_server, {dvc['images']} images (s)")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="500 vs 5,000 (eval 500 vs 5,000), val 200, memory budget 0.1 GiB, DVC 5,000 files")
    ap.add_argument("--small", type=int, default=5000)
    ap.add_argument("--large", type=int, default=120000)
    ap.add_argument("--eval-small", type=int, default=5000)
    ap.add_argument("--eval-large", type=int, default=100000,
                    help="test split of the large set: > 77,672 so that auto streams it at 96 px under 2 GiB")
    ap.add_argument("--val", type=int, default=1000, help="val split size of both datasets")
    ap.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS,
                    help="measure each command on the ImageFolder, on its shards, or both")
    ap.add_argument("--dvc-files", type=int, default=100000)
    ap.add_argument("--loader-images", type=int, default=1280)
    ap.add_argument("--train-steps", type=int, default=5, help="timed 224 px training steps (after 2 warm-up)")
    ap.add_argument("--image-size", type=int, default=96, help="params.yaml's: 120,000 images are 3.1 GiB decoded")
    ap.add_argument("--max-steps", type=int, default=50, help="capped at --small / 64: within the first epoch")
    ap.add_argument("--loading", default="auto", choices=["stream", "auto", "memory"],
                    help="train.shared.data_loading and evaluate.data_loading (the subset part always streams)")
    ap.add_argument("--budget-gib", type=float, default=None,
                    help="memory_budget_gib of train and evaluate: auto streams a split decoded past it "
                         "(default 2, params.yaml's; 0.1 with --quick)")
    ap.add_argument("--subset", type=int, default=100, help="images_per_class of the subset part")
    ap.add_argument("--subset-epochs", type=int, default=3, help="the subset part runs 1 epoch and this many")
    ap.add_argument("--bootstrap", type=int, default=2000, help="evaluate.bootstrap_samples")
    ap.add_argument("--parts", nargs="+", default=["train", "evaluate", "validate", "subset"],
                    choices=["train", "evaluate", "validate", "subset", "loader", "dvc", "default"])
    ap.add_argument("--default-size", action="store_true", help="also run the default-size comparison (minutes)")
    ap.add_argument("--base", default="/tmp/base", help="today's code: a worktree of the base commit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    if args.quick:
        args.small, args.large, args.eval_small, args.eval_large = 500, 5000, 500, 5000
        args.val, args.dvc_files = min(args.val, 200), min(args.dvc_files, 5000)
        # the full run's pattern, small in memory and large streamed under auto: 500 images at 96 px are
        # 13 MiB decoded, 5,000 are 132 MiB, past 0.1 GiB
        args.budget_gib = 0.1 if args.budget_gib is None else args.budget_gib
    args.budget_gib = 2.0 if args.budget_gib is None else args.budget_gib
    # both training runs stay inside their first epoch (no per-epoch validation or worker restarts in one only)
    args.max_steps = min(args.max_steps, max(1, args.small // BATCH))
    parts = [p for p in args.parts if p != "default"] + (["default"] if args.default_size else [])
    CACHE.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    code = subprocess.run([sys.executable, "-c", "import headstart; print(headstart.__file__)"], env=_env(),
                          capture_output=True, text=True, check=True).stdout.strip()
    result: dict[str, Any] = {
        **previous,
        "command": "python benchmarks/data_scale.py " + " ".join(sys.argv[1:]),
        "code": code,  # the headstart the subprocesses import (PYTHONPATH=<this tree>/src)
        "sizes": {"train": [args.small, args.large], "evaluate": [args.eval_small, args.eval_large], "val": args.val,
                  "image_size": args.image_size, "max_steps": args.max_steps, "loading": args.loading,
                  "memory_budget_gib": args.budget_gib, "forms": args.forms},
        "memory": "peak over 200 ms samples of the summed RSS and summed PSS of the command's process tree",
        "loading": "the mode auto picks per split, by headstart.data.dataset.streams' rule (decoded uint8 size "
                   "vs memory_budget_gib); a streamed run shows a loader worker in max_processes",
        "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
    }
    started = time.perf_counter()
    data = datasets(args) if {"train", "evaluate", "validate", "subset"} & set(parts) else None
    if data:
        result["datasets"] = {k: {"counts": v["counts"], "shard_files": v["shard_files"], "pack_s": v["pack_s"],
                                  "bytes": v["bytes"]} for k, v in data.items()}
    for part in parts:
        print(f"data_scale: {part}", file=sys.stderr)
        fn = {"train": bench_train, "evaluate": bench_evaluate, "validate": bench_validate,
              "subset": bench_subset}.get(part)
        t = time.perf_counter()
        if fn is not None:
            result[part] = fn(args, data)
        else:
            result[part] = {"loader": bench_loader, "dvc": bench_dvc, "default": bench_default}[part](args)
        result[part]["load_avg"] = os.getloadavg()
        result[part]["seconds"] = round(time.perf_counter() - t, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # after every part: a partial run is kept
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k in parts}, indent=2))


if __name__ == "__main__":
    main()
