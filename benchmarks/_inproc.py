"""Benchmarks that run inside one Python process, each started fresh by ``run.py``.

    python benchmarks/_inproc.py {models,frontend,batch,train} --tmp DIR [--quick]

The last line printed is a JSON list of metrics (see ``_common.Metric``).
Within one process every reference is timed in turn with the thing it is
compared to (interleaved, order alternating), and each ratio is taken within
one round, so a slow spell of a shared machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this working tree's specnet, whatever is installed
from _common import (  # noqa: E402
    Metric,
    fsdd_files,
    metric_payload,
    model_file,
    train_config,
    write_fsdd_manifest,
)

import numpy as np  # noqa: E402
import torch  # noqa: E402

THREADS = 2


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def clock() -> float:
    return time.perf_counter()


# ------------------------------------------------------------------ front-end


def bench_frontend(quick: bool, tmp: Path) -> list[Metric]:
    """specnet's LogMelSpectrogram vs librosa (item by item) vs torchaudio, 64 x 5 s at 16 kHz."""
    import librosa
    import torchaudio.transforms as T

    from specnet.features import LogMelSpectrogram
    from specnet.featureconfig import FeatureConfig

    torch.set_num_threads(THREADS)
    # Fixed settings (those of ../shared/MEASURED.md and the ESC-10 recipe when written), not read
    # from the recipe, so the number stays comparable when a recipe changes.
    cfg = FeatureConfig(sample_rate=16000, n_fft=1024, hop_length=320, n_mels=64, f_min=50.0, f_max=8000.0)
    batch, seconds = 64, 5.0
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * cfg.sample_rate)) / cfg.sample_rate
    waves = (0.1 * rng.standard_normal((batch, t.size)) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000, (batch, 1)) * t)).astype(np.float32)
    x = torch.from_numpy(waves)

    frontend = LogMelSpectrogram(cfg).eval()
    ta_mel = T.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.window_length, hop_length=cfg.hop_length,
        f_min=cfg.f_min, f_max=cfg.max_frequency, n_mels=cfg.n_mels, power=cfg.power, center=cfg.center,
        pad_mode=cfg.pad_mode, norm="slaney", mel_scale="slaney",
    )
    ta_db = T.AmplitudeToDB(stype="power", top_db=None)

    try:  # numpy's OpenBLAS spins its 2 threads on librosa's small mel matmul: on a busy
        # machine that made librosa 4-10x slower. One BLAS thread is its best case here.
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None

    def run_librosa() -> np.ndarray:
        if threadpool_limits is not None:
            with threadpool_limits(1, user_api="blas"):
                return _run_librosa()
        return _run_librosa()

    def _run_librosa() -> np.ndarray:
        out = []
        for y in waves:
            mel = librosa.feature.melspectrogram(
                y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.window_length, hop_length=cfg.hop_length,
                n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.max_frequency, power=cfg.power, center=cfg.center,
                pad_mode=cfg.pad_mode, htk=False, norm="slaney",
            )
            out.append(librosa.power_to_db(mel, ref=1.0, amin=cfg.log_floor, top_db=None))
        return np.stack(out)

    def run_specnet(inputs=x, module=frontend) -> torch.Tensor:
        with torch.inference_mode():
            return module(inputs)

    def run_torchaudio() -> torch.Tensor:
        with torch.inference_mode():
            return ta_db(ta_mel(x))

    # Warm up (librosa's first call builds and caches its filters; numba compiles), check agreement.
    ref = run_librosa()
    ours = run_specnet().numpy()
    theirs = run_torchaudio().numpy()
    diff = float(np.abs(ours - ref).max())
    diff_ta = float(np.abs(theirs - ref).max())
    log(f"front-end agreement with librosa: max |dB diff| specnet {diff:.2e}, torchaudio {diff_ta:.2e}")

    rounds = 3 if quick else 7
    times: dict[str, list[float]] = {"librosa": [], "specnet": [], "torchaudio": []}
    funcs = {"librosa": run_librosa, "specnet": run_specnet, "torchaudio": run_torchaudio}
    names = list(funcs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = clock()
            funcs[name]()
            times[name].append(clock() - start)
    ratio = [lib / ours for lib, ours in zip(times["librosa"], times["specnet"])]
    metrics = [
        Metric("frontend_vs_librosa", ratio, "x", 1.5, "higher",
               f"64 x 5 s @ {cfg.sample_rate} Hz, n_fft {cfg.n_fft}, hop {cfg.hop_length}, {cfg.n_mels} mels; "
               f"max dB diff vs librosa {diff:.1e}"),
        Metric("frontend_specnet_clips_per_s", [batch / s for s in times["specnet"]], "clips/s", headline=False),
        Metric("frontend_librosa_clips_per_s", [batch / s for s in times["librosa"]], "clips/s", headline=False,
               note="item by item, after warm-up, one BLAS thread"),
        Metric("frontend_torchaudio_clips_per_s", [batch / s for s in times["torchaudio"]], "clips/s", headline=False,
               note=f"MelSpectrogram+AmplitudeToDB, Slaney, reflect; max dB diff {diff_ta:.1e}"),
        Metric("frontend_torchaudio_vs_librosa", [lib / ta for lib, ta in zip(times["librosa"], times["torchaudio"])],
               "x", headline=False),
    ]

    if torch.cuda.is_available():
        device = torch.device("cuda")
        gpu_frontend = LogMelSpectrogram(cfg).to(device).eval()
        gx = x.to(device)
        for _ in range(3):
            run_specnet(gx, gpu_frontend)
        torch.cuda.synchronize()
        inner = 20
        gpu_times, lib_times = [], []
        for _ in range(rounds):
            start = clock()
            run_librosa()
            lib_times.append(clock() - start)
            torch.cuda.synchronize()
            start = clock()
            for _ in range(inner):
                run_specnet(gx, gpu_frontend)
            torch.cuda.synchronize()
            gpu_times.append((clock() - start) / inner)
        metrics.append(Metric("frontend_gpu_vs_librosa", [lib / g for lib, g in zip(lib_times, gpu_times)], "x", 100.0,
                              "higher", f"{torch.cuda.get_device_name(0)}; waveforms already on the GPU"))
        metrics.append(Metric("frontend_gpu_clips_per_s", [batch / g for g in gpu_times], "clips/s", headline=False))
    return metrics


# ------------------------------------------------------------------ batch classification


def bench_batch(quick: bool, tmp: Path) -> list[Metric]:
    """``specnet classify`` over FSDD files vs the bare model forward on the same windows in memory."""
    from specnet import cli
    from specnet.audio import load_audio
    from specnet.inference import load_model
    from specnet.windows import Windows

    count = 500 if quick else 3000
    files = [str(f) for f in fsdd_files(count)]
    path, how = model_file("fsdd", tmp)
    batch_size = 64  # specnet classify's default
    argv = ["classify", "--model", str(path), "--batch-size", str(batch_size), "--device", "cpu", *files]  # as the reference

    def run_cli() -> tuple[float, float]:
        sink = io.StringIO()
        start, cpu = clock(), time.process_time()
        with contextlib.redirect_stdout(sink):
            cli.main(argv)
        elapsed, cpu = clock() - start, time.process_time() - cpu
        if sink.getvalue().count("\n") < len(files):
            raise RuntimeError("specnet classify printed fewer results than files")
        return elapsed, cpu

    # The reference: the same model, the same windows, decoded and cut beforehand.
    model = load_model(str(path), device="cpu")
    window, hop = model._window_samples(None, None)
    windows = np.concatenate([Windows(load_audio(f, sample_rate=model.sample_rate)[0], window, hop)[:] for f in files])
    batches = [torch.from_numpy(np.ascontiguousarray(windows[i : i + batch_size])) for i in range(0, len(windows), batch_size)]
    net = model.net

    def run_bare() -> tuple[float, float]:
        start, cpu = clock(), time.process_time()
        with torch.inference_mode():
            for b in batches:
                net(b)
        return clock() - start, time.process_time() - cpu

    log(f"batch classify: {len(files)} files, {len(windows)} windows, model {how}")
    run_bare()  # warm-up: kernels for these shapes
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(argv[: len(argv) - len(files) + 64])  # warm-up on 64 files (imports, thread pools)
    rounds = 5 if quick else 7
    t_cli, t_bare, cpu_cli, cpu_bare = [], [], [], []
    for r in range(rounds):
        for which in ("bare", "cli") if r % 2 == 0 else ("cli", "bare"):
            wall, cpu = run_bare() if which == "bare" else run_cli()
            (t_bare if which == "bare" else t_cli).append(wall)
            (cpu_bare if which == "bare" else cpu_cli).append(cpu)
    n = len(files)
    return [
        Metric("batch_classify_vs_bare", [b / c for b, c in zip(t_bare, t_cli)], "x", 0.8, "higher",
               f"{n} FSDD files ({how} model), batch {batch_size}; CLI in-process (interpreter start-up excluded)"),
        Metric("batch_classify_cpu_vs_bare", [b / c for b, c in zip(cpu_bare, cpu_cli)], "x", headline=False,
               note="the same ratio in CPU time of the process (all threads): steadier on a shared machine"),
        Metric("batch_classify_cli_files_per_s", [n / t for t in t_cli], "files/s", headline=False,
               note="specnet.cli.main(['classify', ...]): load model, decode, window, run, print"),
        Metric("batch_classify_bare_files_per_s", [n / t for t in t_bare], "files/s", headline=False,
               note=f"SpecNet.forward over the {len(windows)} windows in memory, inference_mode"),
    ]


# ------------------------------------------------------------------ training


def bench_train(quick: bool, tmp: Path) -> list[Metric]:
    """One ``specnet train`` epoch on FSDD vs a bare forward/backward/step loop on precomputed inputs."""
    import torch.nn.functional as F

    from specnet.training import train as specnet_train
    from specnet.audio import load_audio
    from specnet.devices import autocast_dtype
    from specnet.training import build_model
    from specnet.windows import fit_length

    torch.set_num_threads(THREADS)
    files = fsdd_files(960 if quick else None)
    manifest = write_fsdd_manifest(files, tmp / "fsdd_train.csv")
    classes = [str(d) for d in range(10)]
    targets = torch.tensor([int(f.name.split("_")[0]) for f in files])

    def specnet_epoch(augment: bool, amp: bool | None = None) -> float:
        overrides = {"epochs": 1, "val_split": 0.0, "manifest": str(manifest), "device": "cpu", "seed": 0, "amp": amp}
        if not augment:
            overrides |= {"augment": False, "mixup": 0.0}
        config = train_config("fsdd", **overrides)
        out = tmp / f"train_{'aug' if augment else 'noaug'}_{amp}"
        specnet_train(None, out, config=config, overwrite=True, quiet=True)
        seconds = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["seconds"]
        return float(seconds)

    # The bare loop's inputs: centred crops -> log-mel -> standardised, all precomputed, channels_last.
    config = train_config("fsdd", epochs=1, device="cpu")
    model = build_model(config, classes, "audio", config.clip_seconds)
    clip = model.spec.clip_samples
    crops = np.stack([fit_length(load_audio(f, sample_rate=model.spec.sample_rate)[0], clip) for f in files])
    with torch.no_grad():
        waves = torch.from_numpy(crops)
        model.standardize.fit([model.frontend(waves[i : i + 256]).unsqueeze(1) for i in range(0, len(waves), 256)])
        images = torch.cat([model.images(waves[i : i + 256]) for i in range(0, len(waves), 256)])
        images = images.contiguous(memory_format=torch.channels_last)
    net = model.backbone.to(memory_format=torch.channels_last)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    batch_size = config.batch_size
    # The bare loop runs in the precision specnet chooses by default (bfloat16 on a CPU with AMX).
    amp_dtype = autocast_dtype(torch.device("cpu"))

    def bare_epoch(with_frontend: bool = False, steps: int | None = None) -> float:
        net.load_state_dict(initial)
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in params if p.dim() > 1], "weight_decay": config.weight_decay},
             {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}], lr=config.lr)
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
        n_steps = (len(order) + batch_size - 1) // batch_size if steps is None else steps
        start = clock()
        for step in range(n_steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            if with_frontend:
                with torch.no_grad():
                    x = model.images(waves[idx]).contiguous(memory_format=torch.channels_last)
            else:
                x = images[idx].contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), targets[idx], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return clock() - start

    log(f"train: {len(files)} FSDD files, batch {batch_size}, {config.arch}, clip {config.clip_seconds} s, "
        f"{amp_dtype or torch.float32}")
    bare_epoch(steps=3)  # warm-up
    rounds = 2
    t_spec, t_bare, t_noaug, t_bare_fe, t_fp32 = [], [], [], [], []
    for r in range(rounds):
        # bare, specnet (augmented), specnet (no augmentation), specnet (float32), bare with front-end, bare again:
        # the reference is the mean of the two bare runs that bracket the specnet runs.
        first = bare_epoch()
        t_spec.append(specnet_epoch(augment=True))
        t_noaug.append(specnet_epoch(augment=False))
        t_fp32.append(specnet_epoch(augment=True, amp=False))
        t_bare_fe.append(bare_epoch(with_frontend=True))
        t_bare.append((first + bare_epoch()) / 2)
        log(f"round {r + 1}: epoch seconds: specnet {t_spec[-1]:.2f}, specnet --no-augment {t_noaug[-1]:.2f}, "
            f"specnet --no-amp {t_fp32[-1]:.2f}, bare {t_bare[-1]:.2f}, bare + front-end {t_bare_fe[-1]:.2f}")
    n = len(files)
    return [
        Metric("train_epoch_vs_bare", [s / b for s, b in zip(t_spec, t_bare)], "x", 1.15, "lower",
               f"{n} files; specnet epoch with the recipe's augmentation / bare loop on precomputed inputs"),
        Metric("train_epoch_noaug_vs_bare", [s / b for s, b in zip(t_noaug, t_bare)], "x", headline=False,
               note="specnet epoch with --no-augment (and no mixup) / the same bare loop"),
        Metric("train_bare_with_frontend_vs_bare", [s / b for s, b in zip(t_bare_fe, t_bare)], "x", headline=False,
               note="bare loop that computes the log-mel of each batch / bare loop on precomputed inputs"),
        Metric("train_epoch_vs_no_amp", [s / f for s, f in zip(t_spec, t_fp32)], "x", headline=False,
               note=f"specnet epoch in its default precision ({amp_dtype or torch.float32}) / the same with --no-amp"),
        Metric("train_specnet_clips_per_s", [n / t for t in t_spec], "clips/s", headline=False),
        Metric("train_bare_clips_per_s", [n / t for t in t_bare], "clips/s", headline=False),
    ]


# ------------------------------------------------------------------ models


def build_models(quick: bool, tmp: Path) -> list[Metric]:
    for name in ("esc10", "fsdd"):
        path, how = model_file(name, tmp)
        log(f"model {name}: {path} ({how})")
    return []


BENCHES = {"models": build_models, "frontend": bench_frontend, "batch": bench_batch, "train": bench_train}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", choices=sorted(BENCHES))
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    metrics = BENCHES[args.bench](args.quick, Path(args.tmp))
    print(metric_payload(metrics))


if __name__ == "__main__":
    main()
