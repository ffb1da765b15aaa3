"""The ``specnet`` command: a thin layer of click commands over the Python API.

Each command parses options, calls the API and formats the result. A
``SpecnetError`` becomes one line on stderr and exit code 1; usage errors (click's,
and a ``ParameterError``: a value specnet refuses) exit 2. ``--debug`` (or ``SPECNET_DEBUG=1``) shows full tracebacks instead. Heavy
modules (torch) are imported inside commands, so ``specnet --help`` is fast.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import math
import os
import re
import shlex
import signal
import stat
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import click

from ._version import __version__
from .errors import AudioError, Given, GivenValueError, ModelFileError, ParameterError, SpecnetError, counted, listed
from .paths import columns, display_name, find_inputs, naming, one_line, padded, text_name, unreadable_folder

#: devices.device_name's names, for option checks without importing torch (a test keeps them equal).
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]*))?")
#: modelspec.MAX_CLIP_SECONDS, for --help without importing numpy; a test keeps them equal.
MAX_WINDOW_SECONDS = 300.0
#: trainconfig.DEFAULT_VAL_SPLIT, for --help without importing torch (a test keeps the two equal).
DEFAULT_VAL_SPLIT = 0.1
#: FeatureConfig's defaults, for --help without importing numpy (a test keeps them equal).
FRONT_END_DEFAULTS = {"n_mels": 64, "n_fft": 512, "hop_length": 160, "f_min": 50.0}
#: modelspec.MAX_IMAGE_SIDE, for option ranges without importing numpy (a test keeps them equal).
MAX_IMAGE_SIDE = 4096
#: modelspec.MAX_IN_CHANS, likewise.
MAX_IN_CHANS = 64


class _Finite:
    """Refuses nan and inf as usage errors, as a range refuses a value outside it (click's own
    float and range types let nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class _FiniteFloat(_Finite, click.types.FloatParamType):
    pass


class _FiniteFloatRange(_Finite, click.FloatRange):
    pass


class _Device(click.ParamType):
    """A device name: auto, cpu, cuda, cuda:N (the GPU numbered N) or mps."""

    name = "device"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        return [CompletionItem(name) for name in ("auto", "cpu", "cuda", "mps") if name.startswith(incomplete)]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not DEVICE_NAME.fullmatch(value):
            self.fail(f"{value!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'.", param, ctx)
        return value


def FiniteFloat(min: float | None = None, max: float | None = None, **open_ends: bool) -> click.ParamType:
    """A finite float option; with ``min`` or ``max`` (and ``min_open``/``max_open``), in that range."""
    if min is None and max is None:
        return _FiniteFloat()
    return _FiniteFloatRange(min, max, **open_ends)


def _debug_enabled() -> bool:
    return os.environ.get("SPECNET_DEBUG", "") not in ("", "0")


#: A keyword argument named in an API message: ``overwrite=True``, ``amp=False``,
#: ``manifest=FILE.csv``, ``lr=`` (one not followed by a value); or a front-end setting,
#: ``features.n_mels``.
#: A quoted value comes first in the alternation, so a keyword inside one is never matched.
_KEYWORD = re.compile(r"""((?<!\w)'[^']*'(?!\w)|(?<!\w)"[^"]*"(?!\w))|(?<![\w./=-])(?:features\.([a-z][a-z0-9_]*)\b|([a-z][a-z0-9_]*)=(True|False|[A-Z]{2,}(?:\.[a-z]+)?)?(?=[\s,;/)]|$))""")


@functools.cache
def _options_by_name() -> dict[str, click.Option]:
    """Every command's ``--`` options by parameter name (the commands are fixed once defined)."""
    flags: dict[str, click.Option] = {}
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.opts[0].startswith("--"):
                flags.setdefault(param.name, param)
    return flags


def as_flags(message: str) -> str:
    """An API message as the command line says it: ``pass overwrite=True`` becomes ``pass
    --overwrite``, ``amp=False`` ``--no-amp``, ``manifest=FILE.csv`` ``--manifest FILE.csv``,
    ``features.n_mels`` ``--n-mels``.

    Only names of specnet's options are rewritten, and never inside a quoted value; a
    keyword with a value (``val_split=2``) is a value the user gave and stays as it is."""
    flags = _options_by_name()

    def as_flag(match: re.Match) -> str:
        quoted, setting, name, value = match.groups()
        option = flags.get(setting or name)
        if quoted or option is None:
            return match.group(0)
        if setting:
            return option.opts[0]
        if value == "False":
            return option.secondary_opts[0] if option.secondary_opts else match.group(0)
        return option.opts[0] if value in (None, "True") else f"{option.opts[0]} {value}"

    return _KEYWORD.sub(as_flag, message)


def _error_line(exc: SpecnetError) -> str:
    """The one line a command gives for a specnet error: ``error: ...``, options named by their flags."""
    said = exc.said(_flag_of) if isinstance(exc, GivenValueError) else str(exc)
    return f"error: {one_line(as_flags(said))}"


def _flag_of(option: str) -> str | None:
    """The ``--`` flag of specnet's option ``option`` (``--hop``), None if no command has one."""
    found = _options_by_name().get(option)
    return found.opts[0] if found else None


def _said(record: logging.LogRecord) -> str:
    """A log record's message with each value it names as :class:`~specnet.errors.Given` said
    under its flag (``--hop 3 s``)."""
    if isinstance(record.args, tuple) and any(isinstance(arg, Given) for arg in record.args):
        return record.msg % tuple(arg.said(_flag_of) if isinstance(arg, Given) else arg for arg in record.args)
    return record.getMessage()


class _OneLineMessages(logging.Handler):
    """specnet's log records on stderr, one line each: ``warning: ...``, or ``note: ...`` for
    information (what a command does on the user's behalf, such as adapting RGB weights)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        prefix = "warning" if record.levelno >= logging.WARNING else "note"
        # tqdm.write lifts a progress bar on stderr off its line, prints, and redraws it, so
        # a warning raised while files decode starts a line of its own instead of ending the bar's.
        tqdm.write(f"{prefix}: {one_line(as_flags(_said(record)))}", file=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="specnet")
@click.option("--debug", is_flag=True, help="Show full tracebacks (also SPECNET_DEBUG=1).")
def cli(debug: bool) -> None:
    """Classify audio (and images) with CNNs over mel-spectrograms.

    \b
    specnet classify clip.wav                 top labels, bundled ESC-10 model
    specnet classify --model fsdd digits/     spoken digits, a whole folder
    specnet train DATA_DIR --out runs/mine    one subfolder per class
    specnet evaluate runs/mine/model.safetensors TEST_DIR
    specnet adapt fsdd my_voice/ -o mine.safetensors   no labels needed
    """
    if debug:
        os.environ["SPECNET_DEBUG"] = "1"
    logger = logging.getLogger("specnet")
    if not any(isinstance(h, _OneLineMessages) for h in logger.handlers):
        logger.addHandler(_OneLineMessages())
        logger.setLevel(logging.INFO)
        logger.propagate = False


# ------------------------------------------------------------------ helpers


class _NoBar:
    """What ``_progress_bar`` gives when no bar is shown (and tqdm need not be imported)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def clear(self) -> None:
        pass


def _progress_bar(total: int, desc: str):
    if total < 20 or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, leave=False)


def _is_model_file(path: str) -> bool:
    """Whether ``path`` is a file named as specnet's model files are (``*.safetensors``)."""
    return path.lower().endswith(".safetensors") and os.path.isfile(path)


def _check_data_dir(data_dir: str | None, *, model_file: str, manifest: str | None) -> None:
    """A usage error for a file given as DATA_DIR, saying what the file seems to be; ``model_file``
    says what to do with a model file. A folder that is missing is the data's own error."""
    if data_dir is not None and os.path.isfile(data_dir):
        hint = (f"a model file: {model_file}" if _is_model_file(data_dir) else
                "a file, not a folder of class folders" + ("" if manifest else " (a CSV manifest is given with --manifest)"))
        raise click.BadParameter(f"{display_name(data_dir)} is {hint}", param_hint="DATA_DIR")


def _fail_line(path: str, reason: str, kind: str) -> str:
    # A pattern or folder kept by find_inputs: it gave no file.
    if not os.path.lexists(path) and glob.has_magic(path):
        return f"{display_name(path)}: no {kind} files match this pattern"
    if os.path.isdir(path):
        return f"{display_name(path)}: {unreadable_folder(path) or f'no {kind} files in this folder'}"
    if path == "-" and not os.path.lexists(path):
        return "-: reading standard input is not supported; give files, folders or glob patterns"
    not_input = f"not {'audio' if kind == 'audio' else 'an image'}"
    if _is_model_file(path):
        return f"{display_name(path)}: a model file, {not_input}; give it with --model"
    other = _OTHER_MODEL_FILES.get(os.path.splitext(path)[1].lower()) if os.path.isfile(path) else None
    if other:
        return f"{display_name(path)}: {other}, {not_input}; specnet takes its own .safetensors model files with --model"
    return one_line(naming(path, reason))


#: Other model and checkpoint files a classify input may be by mistake, by suffix.
_OTHER_MODEL_FILES = {".onnx": "an ONNX model (run it with onnxruntime)", ".pt": "a PyTorch file", ".pth": "a PyTorch file",
                      ".ckpt": "a checkpoint file"}


# ------------------------------------------------------------------ classify


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "-m", "model_name", default=None, help="Bundled model name (esc10, fsdd) or a model file. Default: esc10.")
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(min=1), help="Labels to show per input.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--window", type=FiniteFloat(min=0, max=MAX_WINDOW_SECONDS, min_open=True), default=None, help="Window length in seconds for long clips (default: the model's clip length).")
@click.option("--hop", type=FiniteFloat(min=0, min_open=True), default=None, help="Seconds between windows (default: half a window).")
@click.option("--timeline", is_flag=True, help="Also give the top label of every window (with --format csv: one row per window instead of the top labels).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--device", type=_Device(), default="auto", show_default=True)
@click.option("--num-workers", default=2, show_default=True, type=click.IntRange(min=1), help="Threads decoding files ahead of the network, when it leaves cores to spare (GPU, or more cores than torch threads).")
def classify(paths, model_name, top_k, fmt, window, hop, timeline, batch_size, device, num_workers) -> None:
    """Print the top labels of audio (or image) files, folders or glob patterns."""
    from .inference import Failure, load_model

    model = load_model(model_name, device=device)
    try:  # before the files are looked for: a usage error
        model.check_audio_options(timeline=timeline, window=window, hop=hop)
    except SpecnetError as exc:
        raise click.UsageError(as_flags(str(exc))) from None
    files = find_inputs(paths, kind=model.input_kind)
    # Every format is written as results come, so an interrupted batch keeps what it scored.
    if fmt == "csv":
        click.echo(_csv_text([TIMELINE_COLUMNS if timeline else LABEL_COLUMNS]), nl=False, color=True)  # color: no ANSI stripping
    written, failures = 0, 0
    try:
        with _progress_bar(len(files), "classifying") as bar:  # closed on an error too: its line is not left half drawn
            for result in model.predict_iter(files, top_k=top_k, window=window, hop=hop, timeline=timeline, batch_size=batch_size, num_workers=num_workers):
                bar.clear()  # the lines go where the bar was, and the bar is drawn again below them
                if isinstance(result, Failure):
                    failures += 1
                    click.echo(f"error: {_fail_line(result.path, result.reason, model.input_kind)}", err=True)
                elif fmt == "table":
                    click.echo(_table_block(result, model.name))
                elif fmt == "csv":
                    # color=True: written as they are, where click would strip an escape sequence from a name
                    click.echo(_csv_text(_window_rows(result) if timeline else _label_rows(result)), nl=False, color=True)
                else:  # the items of one JSON array, indented as json.dumps(results, indent=2) would
                    item = textwrap.indent(json.dumps(result.to_dict(), indent=2), "  ")
                    click.echo(("[\n" if written == 0 else ",\n") + item, nl=False)
                written += not isinstance(result, Failure)
                bar.update(1)
    finally:  # also when stopped, before the first item too: what was written is one valid JSON array
        if fmt == "json":
            click.echo("\n]" if written else "[]")
    if failures:
        if len(files) > 1:
            click.echo(f"{failures} of {len(files)} inputs failed", err=True)
        sys.exit(1)


#: What the table shows for a timeline window of digital silence (no label: its vote means nothing).
SILENCE = "(silence)"


def _table_block(result, model_name: str) -> str:
    head = display_name(result.path)
    if result.duration is not None:
        head += f"  ({result.duration:.2f} s, model {display_name(model_name)})"
    else:
        head += f"  (model {display_name(model_name)})"
    segments = result.segments or []
    # A class is named after its folder: a newline or a byte that is not UTF-8 shows as a file name does.
    width = max(columns(display_name(p["label"] or "")) for p in [*result.predictions, *segments])
    lines = [head] + [f"  {padded(display_name(p['label']), width)}  {p['score']:7.2%}" for p in result.predictions]
    if segments:
        decimals = _distinct_decimals(segments)
        digits = len(f"{segments[-1]['end']:.{decimals}f}")
        lines.append("  top label of each window:")
        for seg in segments:
            label = f"{padded(display_name(seg['label']), width)}  {seg['score']:7.2%}" if seg["label"] is not None else SILENCE
            lines.append(f"    {seg['start']:>{digits}.{decimals}f} - {seg['end']:>{digits}.{decimals}f} s  {label}")
    return "\n".join(lines)


def _distinct_decimals(segments: Sequence[dict[str, Any]]) -> int:
    """Decimals (2 to 4) that print every window's start (s) differently, and each window's end
    apart from its start: the window that ends a file can start a few milliseconds after the one
    before it, and a --window of a few milliseconds would read "0.00 - 0.00 s"."""
    for decimals in (2, 3):
        shown = [(f"{seg['start']:.{decimals}f}", f"{seg['end']:.{decimals}f}") for seg in segments]
        if len({start for start, _ in shown}) == len(shown) and all(start != end for start, end in shown):
            return decimals
    return 4


def _csv_text(rows: Iterable[list[Any]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    plain, quoted = csv.writer(buffer, lineterminator="\n"), csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:  # a carriage return in a file's name is quoted as a newline is: readers end a row at either
        (quoted if any("\r" in str(cell) for cell in row) else plain).writerow(row)
    return buffer.getvalue()


#: ``classify --format csv``: one row per input and rank (its top labels), or with --timeline
#: one row per window (its start and end in seconds and its top label).
LABEL_COLUMNS = ["path", "rank", "label", "score", "duration"]
TIMELINE_COLUMNS = ["path", "start", "end", "label", "score"]


def _label_rows(result) -> list[list[Any]]:
    """:data:`LABEL_COLUMNS` rows of one input."""
    duration = "" if result.duration is None else f"{result.duration:.3f}"
    return [[text_name(result.path), rank, p["label"], f"{p['score']:.6f}", duration]
            for rank, p in enumerate(result.predictions, start=1)]


def _window_rows(result) -> list[list[Any]]:
    """:data:`TIMELINE_COLUMNS` rows of one input (empty label and score for a window of digital silence)."""
    return [[text_name(result.path), f"{s['start']:.4f}", f"{s['end']:.4f}", s["label"] or "", "" if s["score"] is None else f"{s['score']:.6f}"]
            for s in result.segments or []]


# ------------------------------------------------------------------ embed


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The .npz file to write.")
@click.option("--level", type=click.Choice(["clip", "frame"]), default="clip", show_default=True)
@click.option("--model", "-m", "model_name", default=None, help="Bundled model name or model file. Default: esc10.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--device", type=_Device(), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def embed(paths, output, level, model_name, batch_size, device, overwrite) -> None:
    """Write embeddings of audio (or image) files to an .npz: embeddings, paths. A clip embedding is
    what the model's final layer reads (the pooled vector, after any hidden dense layer); with
    --level frame (audio models), one vector per time frame from the last convolution block, before
    the pooling, with timestamps (s) and frames (how many of each file's frames are centred inside
    its audio; the rest of its row, up to the longest file's frames, is NaN)."""
    import io

    import numpy as np

    from .fileio import atomic_write, check_output_path
    from .inference import Failure, load_model, nan_padded

    check_output_path(output, overwrite=overwrite, suffix=".npz", holds="embeddings (a NumPy archive)")
    model = load_model(model_name, device=device)
    if level == "frame" and model.input_kind != "audio":
        raise click.UsageError(f"--level frame needs an audio model; {model.name} takes images")
    files = find_inputs(paths, kind=model.input_kind)
    if level == "clip":
        results = model.embed_iter(files, batch_size=batch_size)
    else:  # each file's frames (count, C) centred inside its audio, and their times
        results = model.embed_frames_iter(files, batch_size=batch_size)
    good_paths, outputs, failures = [], [], 0
    with _progress_bar(len(files), "embedding") as bar:
        for path, result in zip(files, results):
            bar.update(1)
            if isinstance(result, Failure):
                failures += 1
                bar.clear()
                click.echo(f"error: {_fail_line(result.path, result.reason, model.input_kind)}", err=True)
            else:
                good_paths.append(path)
                outputs.append(result)
    if level == "clip":
        arrays = {"embeddings": np.stack(outputs) if outputs else np.zeros((0, 0), np.float32)}
    else:  # rows padded with NaN to the longest file's frames
        counts = [len(frames) for frames, _ in outputs]
        stamps = model.net.frame_times(max(counts, default=0))  # the frames' centres, shared by every row
        rows = nan_padded([frames for frames, _ in outputs], outputs[0][0].shape[-1] if outputs else 0)
        arrays = {"embeddings": rows, "timestamps": stamps, "frames": np.array(counts, dtype=np.int64)}
    if good_paths:
        buffer = io.BytesIO()
        np.savez(buffer, paths=np.array([text_name(p) for p in good_paths]), **arrays)
        atomic_write(output, buffer.getvalue(), overwrite=overwrite)
        size = arrays["embeddings"].shape[-1]
        if level == "clip":
            wrote = f"{counted(len(good_paths), 'clip embedding')} of size {size}"
        else:  # a file has many frames
            wrote = f"{counted(sum(counts), 'frame embedding')} of size {size} from {counted(len(good_paths), 'file')}"
        click.echo(f"wrote {wrote} to {display_name(output)}", err=True)
    if failures:
        if len(files) > 1:
            click.echo(f"{failures} of {len(files)} inputs failed" + ("" if good_paths else f"; {display_name(output)} not written"), err=True)
        sys.exit(1)


# ------------------------------------------------------------------ adapt


@cli.command()
@click.argument("model_file", metavar="MODEL")
@click.argument("paths", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The adapted model file to write.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--device", type=_Device(), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def adapt(model_file, paths, output, batch_size, device, overwrite) -> None:
    """Adapt MODEL (a bundled name or a model file) to new recordings without their labels.

    Re-measures the network's batch-norm statistics on PATHS (files, folders or glob patterns
    recorded the way the audio to classify is: a microphone, a room, a voice, with its classes
    mixed as they will be) and writes the adapted model to OUTPUT; the weights stay as they are.
    """
    from .fileio import check_output_path
    from .inference import load_model

    check_output_path(output, overwrite=overwrite, suffix=".safetensors", holds="model files")
    model = load_model(model_file, device=device)
    files = find_inputs(paths, kind=model.input_kind)

    def report(failure) -> None:
        click.echo(f"error: {_fail_line(failure.path, failure.reason, model.input_kind)}", err=True)

    result = model.adapt(files, batch_size=batch_size, on_failure=report)
    model.save(output, overwrite=overwrite)
    if model.input_kind == "image":  # an image is one window
        what = counted(result.windows, "image")
    else:
        what = f"{counted(result.windows, 'window')} of {counted(result.inputs, 'input')}"
    click.echo(f"adapted {display_name(model.name)} to {what}; wrote {display_name(output)}", err=True)
    if result.failures:
        click.echo(f"{len(result.failures)} of {len(files)} inputs failed", err=True)
        sys.exit(1)


# ------------------------------------------------------------------ train


#: The options of a config file that are tables of settings.
_CONFIG_TABLES = ("features", "augment_args", "arch_args", "dataset")
#: Front-end settings a config file may also give at its top level, as flags give them (``top_db`` aside).
_FEATURE_OPTIONS = ("sample_rate", "n_mels", "n_fft", "hop_length", "f_min", "f_max")


def _yaml_loader() -> type:
    """PyYAML's safe loader, refusing a mapping that names a key twice (as TOML does), where
    PyYAML keeps the last value without a word."""
    import yaml

    class OnceEachLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: set[str] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: the keys after it override those
                    continue
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str):  # a key of another kind is refused later, by name
                    if key in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return OnceEachLoader


def _check_each_option_once(values: dict[str, Any], path: str) -> None:
    """Refuse a config file that gives one option twice, where one value would be dropped without
    a word: under both spellings (``val-split`` and ``val_split``), or at the top and in
    ``[features]`` (``n_mels``; ``top_db``, which sets ``[features]``' ``top_db`` and ``ref_peak``)."""
    spellings: dict[str, list[str]] = {}
    for key in values:
        spellings.setdefault(key.replace("-", "_"), []).append(key)
    for names in spellings.values():
        if len(names) > 1:
            raise SpecnetError(f"{path}: {names[0]} and {names[1]} are the same option: give it once")
    table = values.get("features") or {}
    for key in (*_FEATURE_OPTIONS, "top_db"):
        in_table = [setting for setting in ((key, "ref_peak") if key == "top_db" else (key,)) if setting in table]
        if key in spellings and in_table:
            raise SpecnetError(f"{path}: {spellings[key][0]} at the top and {in_table[0]} in [features] set the same thing: give one")


def _read_config_file(path: str) -> dict[str, Any]:
    text_path = Path(path)
    try:
        raw = text_path.read_bytes()
    except OSError as exc:
        raise SpecnetError(f"{path}: cannot read config file ({exc.strerror})") from None
    if text_path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.load(raw, Loader=_yaml_loader()) or {}
        except yaml.YAMLError as exc:  # a parser's error points at the place: say where, as TOML's does
            mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
            reason = f"{problem} (at line {mark.line + 1}, column {mark.column + 1})" if mark and problem else str(exc).split("\n")[0]
            raise SpecnetError(f"{path}: invalid YAML ({reason})") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            values = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SpecnetError(f"{path}: invalid TOML ({exc})") from None
    if not isinstance(values, dict):
        raise SpecnetError(f"{path}: config must be a table of option = value")
    for key, value in values.items():
        if not isinstance(key, str):
            raise SpecnetError(f"{path}: option names are words, not {key!r}")
        if key in _CONFIG_TABLES and value is None:  # a YAML table with every line commented out
            values[key] = value = {}
        if key in _CONFIG_TABLES and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise SpecnetError(f"{path}: {key} must be a table of setting = value ([{key}] in TOML), not {value!r}")
    _check_each_option_once(values, path)
    options = {k.replace("-", "_"): v for k, v in values.items()}
    # A relative path in the file is relative to the file's folder, as a manifest's rows are
    # to the manifest's; `~/data` is in the home folder, as a shell reads it; `init` may also
    # be a bundled model's name.
    for key in ("data_dir", "manifest", "val_dir", "weights", "init"):
        value = options.get(key)
        if value is not None and not isinstance(value, str):  # a number or a list: no path
            raise ParameterError(f"{path}: {key} must be a file or folder name (text), not {value!r}")
        if not value:
            continue
        options[key] = value = os.path.expanduser(value)
        if not os.path.isabs(value):
            beside = os.path.join(os.path.dirname(path), value)
            if key != "init" or os.path.isfile(beside):  # else a bundled model's name, or a file elsewhere
                options[key] = beside
    return options


def _parse_arch_args(values: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} must look like name=value", param_hint="--arch-arg")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _floor_settings(top_db: Any, source: str) -> dict[str, Any]:
    """``--top-db`` (or a config file's top-level ``top_db``, ``source`` saying which) as feature
    settings: dB below each clip's peak, 0 for absolute dB without a floor."""
    from .checks import is_finite_number

    if not (is_finite_number(top_db) and top_db >= 0):
        raise SpecnetError(f"{source}: top_db={top_db!r} must be a number of dB >= 0 (0: absolute dB, no floor)")
    return {"ref_peak": top_db > 0, "top_db": top_db or None}


def _flag_names(ctx: click.Context) -> dict[str, str]:
    """The command's ``--`` flag by parameter name: ``{"val_split": "--val-split", ...}``."""
    return {p.name: p.opts[0] for p in ctx.command.params if p.opts[0].startswith("--")}


def _said_as_given(message: str, ctx: click.Context, config_file: str | None, explicit: set[str], file_keys: set[str]) -> str:
    """A training option's error as the user gave the options it names: a flag under its name
    (``--val-split=2 must ...``), and naming the config file when the file set one of them.
    (A hint at an option nobody gave, ``pass weights=FILE``, becomes ``--weights FILE`` where
    every message does, in :func:`as_flags`.)

    Quoted values are left as they are, and so is a message listing unknown names (``unknown
    ... x; known: ...``): its names are the user's own keys and the list of right ones."""
    flags = _flag_names(ctx)
    if "; known: " in message:
        unknown = set(re.findall(r"[\w-]+", message.split("; known: ")[0]))  # n-mels, as the file spells it
        return f"{config_file}: {message}" if config_file and unknown & file_keys else message
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(set(flags) | file_keys, key=len, reverse=True))) + r")\b")
    blamed_on_file = False

    def as_given(match: re.Match) -> str:
        nonlocal blamed_on_file
        name = match.group(1)
        if name in explicit:
            return flags[name]
        blamed_on_file |= name in file_keys
        return name

    # Every other piece is a quoted value (split keeps them), never rewritten.
    pieces = re.split(r"('[^']*'|\"[^\"]*\")", message)
    said = "".join(piece if i % 2 else pattern.sub(as_given, piece) for i, piece in enumerate(pieces))
    if config_file and (blamed_on_file or said == message):
        return f"{config_file}: {said}"
    return said


def _same_kind(error: SpecnetError) -> type[SpecnetError]:
    """The class to raise ``error`` again as, said another way: ParameterError (a wrong value,
    exit code 2) stays one, and other errors become SpecnetError (exit code 1)."""
    return ParameterError if isinstance(error, ParameterError) else SpecnetError


def _options_as_given(error, ctx: click.Context, config_file: str | None, explicit: set[str], flag_arch_args: set[str]) -> str:
    """An error about options (its ``describe(name)`` says each one as ``name`` does) with each
    option as the user gave it: a flag under its name (``--arch``, ``--arch-arg drop_rate``,
    ``--n-mels``), a config file's setting under its own name, with the file named in front."""
    flags = _flag_names(ctx)
    from_file = False

    def as_given(option: str) -> str:
        nonlocal from_file
        group, _, key = option.rpartition(".")
        if group == "arch_args" and key in flag_arch_args:
            return f"--arch-arg {key}"
        flag = "top_db" if key == "ref_peak" else key  # --top-db sets both
        if group != "arch_args" and flag in explicit:
            return flags[flag]
        from_file = True
        return key
    said = error.describe(as_given)
    return f"{config_file}: {said}" if from_file and config_file else said


@cli.command()
@click.argument("data_dir", required=False)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder for the model, checkpoint, metrics and curves.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML or YAML file with these options (flags win).")
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV with path,label[,fold] instead of DATA_DIR.")
@click.option("--val-dir", type=click.Path(file_okay=False), help="Validation class folders.")
@click.option("--val-fold", type=int, help="Validate on this fold of the manifest, train on the rest.")
@click.option("--val-split", type=FiniteFloat(0, 1, max_open=True), default=None, help=f"Stratified share of the readable files held out for validation (0: train on everything, keep the last epoch).  [default: {DEFAULT_VAL_SPLIT:g} without --val-dir or --val-fold]")
@click.option("--arch", default=None, help="Registered model name (see 'specnet summary --list').  [default: cnn, or the --init model's]")
@click.option("--arch-arg", "arch_args", multiple=True, help="Extra model argument, name=value (JSON value), repeatable.")
@click.option("--pretrained", is_flag=True, help="Start a VGG from ImageNet weights (downloads once).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local ImageNet weight file for offline machines.")
@click.option("--init", help="Start from a specnet model (a file or a bundled name); the head is replaced for new classes.")
@click.option("--freeze-backbone", is_flag=True, help="Train the head only (transfer learning).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over the training set.  [default: 30, more on a small training set: at least 2,400 optimiser steps, at most 300 epochs]")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=FiniteFloat(), default=2e-3, show_default=True, help="Peak learning rate (AdamW, warm-up then cosine).")
@click.option("--weight-decay", type=FiniteFloat(), default=1e-2, show_default=True)
@click.option("--label-smoothing", type=FiniteFloat(), default=0.1, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=None, help="Stop after this many epochs without a better validation accuracy (needs --keep best).")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which epoch's model to save: best validation accuracy, or the last (for an unbiased test fold).")
@click.option("--clip-seconds", type=FiniteFloat(min=0, min_open=True), default=None, help="Training crop length (default: the 90th percentile of the training files' durations, rounded up to 0.1 s, at most 10 s).")
@click.option("--sample-rate", type=click.IntRange(min=1), default=None, help="Model sample rate in Hz (default 16000).")
@click.option("--n-mels", type=click.IntRange(min=1), default=None, help=f"Mel bands.  [default: {FRONT_END_DEFAULTS['n_mels']}]")
@click.option("--n-fft", type=click.IntRange(min=1), default=None, help=f"FFT length in samples.  [default: {FRONT_END_DEFAULTS['n_fft']}]")
@click.option("--hop-length", type=click.IntRange(min=1), default=None, help=f"Samples between frames.  [default: {FRONT_END_DEFAULTS['hop_length']}]")
@click.option("--f-min", type=FiniteFloat(), default=None, help=f"Bottom of the mel filterbank in Hz.  [default: {FRONT_END_DEFAULTS['f_min']:g}]")
@click.option("--f-max", type=FiniteFloat(), default=None, help="Top of the mel filterbank in Hz.  [default: 8000, or half the sample rate if lower]")
@click.option("--top-db", type=FiniteFloat(min=0), default=None, help="Log-mel in dB relative to the peak of each clip the model sees (a training crop, one window of a long file), floored this far below it (0: absolute dB, no floor).  [default: 60]")
@click.option("--image-size", type=(click.IntRange(1, MAX_IMAGE_SIDE), click.IntRange(1, MAX_IMAGE_SIDE)), default=None, help="Height and width images are resized to.  [default: 128 128, or the --init model's]")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Gain, speed, pitch, SpecAugment and mixup; --no-augment turns off all of them, [augment_args] included (a given --mixup still applies).")
@click.option("--mixup", type=FiniteFloat(min=0), default=None, help="Mixup Beta alpha (0 turns it off).  [default: 0.2 with --augment, 0 with --no-augment]")
@click.option("--device", type=_Device(), default="auto", show_default=True)
@click.option("--amp/--no-amp", default=None, help="Mixed precision: float16 on CUDA, bfloat16 on the CPU (default: on with CUDA and on CPUs with AMX, where it is faster).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=1), default=2, show_default=True, help="Threads decoding files.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint, with its own data and options (options given again must match the run's, except --epochs, --patience, --device, --amp and --num-workers).")
@click.option("--overwrite", is_flag=True, help="Start again in --out, replacing the run there (finished or stopped) once the new one has its data and model.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no lines on stdout (per-epoch scores, resuming, early stop); warnings and errors still go to stderr.")
@click.pass_context
def train(ctx: click.Context, data_dir, out, config_file, resume, overwrite, quiet, **flags) -> None:
    """Train a classifier on DATA_DIR (one subfolder per class of audio or image files)."""
    from .runs import CHECKPOINT_FILE, run_options, the_runs_setting, with_run_options, without_replaced
    from .trainconfig import OptionsError, TrainConfig
    from .training import train as run_training

    _check_data_dir(data_dir, model_file="to start from a model, give it with --init", manifest=flags.get("manifest"))
    if resume and overwrite:
        raise click.UsageError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    options = _read_config_file(config_file) if config_file else {}
    # What an error may blame on the file: its options and the settings in its tables.
    file_keys = set(options).union(*(value for value in options.values() if isinstance(value, dict)))
    if resume:  # the run's own options under the file's and the flags: --resume alone continues it
        data_given = data_dir or flags["manifest"] or options.get("data_dir") or options.get("manifest")
        options = with_run_options(run_options(out, required=not data_given), options)
    # A flag wins over the file's choice of the same thing, under whichever name the file made it.
    options = without_replaced(options, {**flags, "data_dir": data_dir})
    features = dict(options.pop("features", {}) or {})
    for key in _FEATURE_OPTIONS:
        if key in options:
            features[key] = options.pop(key)
    if "top_db" in options:  # as --top-db says it; [features] takes ref_peak and top_db apart
        features.update(_floor_settings(options.pop("top_db"), config_file))  # only a file sets it here
    explicit = {name for name in flags if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}
    for name, value in flags.items():
        if name in _FEATURE_OPTIONS:
            if value is not None:
                features[name] = value
        elif name == "top_db":
            if value is not None:
                features.update(_floor_settings(value, "--top-db"))
        elif name == "arch_args":
            if value:
                options["arch_args"] = {**options.get("arch_args", {}), **_parse_arch_args(value)}
        elif name in explicit or name not in options:
            options[name] = value
    options["features"] = features
    data_dir = data_dir or options.pop("data_dir", None)
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:  # only a config file can name one
        names = sorted(known | {"data_dir", "top_db", *_FEATURE_OPTIONS})
        raise ParameterError(f"{config_file}: unknown {listed(unknown, 'training option')}; known: {', '.join(names)}")
    if options.get("weights"):
        options["pretrained"] = True
    try:
        config = TrainConfig(**options)
    except SpecnetError as exc:  # said again, as a ParameterError still (exit code 2)
        raise _same_kind(exc)(_said_as_given(str(exc), ctx, config_file, explicit, file_keys)) from None
    checkpoint = Path(out) / CHECKPOINT_FILE
    before = _file_identity(checkpoint)
    try:
        best = run_training(data_dir, out, config=config, resume=resume, overwrite=overwrite, quiet=quiet)
    except OptionsError as exc:
        raise _same_kind(exc)(_options_as_given(exc, ctx, config_file, explicit, set(_parse_arch_args(flags["arch_args"])))) from None
    except GivenValueError as exc:  # a flag where the user gave one; a config file's value under its own name
        said = exc.said(lambda option: _flag_names(ctx)[option] if option in explicit else None)
        from_file = config_file and any(v.option in file_keys and v.option not in explicit for v in exc.given)
        if resume and not from_file and all(v.option not in explicit for v in exc.given):
            said = str(the_runs_setting(out, exc))  # its options said as flags by as_flags
        raise ParameterError(f"{config_file}: {said}" if from_file else said) from None
    except (KeyboardInterrupt, _Terminated) as exc:  # stopped: say how to go on, if there is a checkpoint of this run
        now = _file_identity(checkpoint)  # with --overwrite, the one there before is the old run's
        if os.environ.get("RANK", "0") == "0" and now is not None and (resume or now != before):
            shown = display_name(out)
            typed = shown == os.fsdecode(out)  # no control character, no byte that is not UTF-8: it can be pasted
            raise type(exc)(f"continue with: specnet train --out {shlex.quote(shown)} --resume" if typed else
                            "continue with --resume and the same --out") from None
        raise
    if not quiet and best and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        if "accuracy" in best:
            scores = f"val accuracy {best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}"
        else:
            scores = "train loss " + ("not measured (every step skipped)" if best["train_loss"] is None else f"{best['train_loss']:.4f}")
        click.echo(f"kept epoch {best['epoch'] + 1}: {scores}; model in {display_name(Path(out) / 'model.safetensors')}")


def _file_identity(path: Path) -> tuple[int, int] | None:
    """``(inode, mtime in ns)`` of ``path``, None if it is not a file: what changes when a
    run writes it again (atomically, so as a new file)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


# ------------------------------------------------------------------ evaluate


@cli.command()
@click.argument("model_file", metavar="MODEL")
@click.argument("data_dir", required=False)
@click.option("--manifest", type=click.Path(dir_okay=False), help="CSV with path,label[,fold].")
@click.option("--fold", type=int, default=None, help="Evaluate on this fold of the manifest only.")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Folder for metrics.json and confusion.png.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--device", type=_Device(), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace files in --out.")
def evaluate(model_file, data_dir, manifest, fold, out, fmt, batch_size, device, overwrite) -> None:
    """Accuracy, macro-F1, per-class scores and a confusion matrix of MODEL (a bundled name or a model file) on labelled data."""
    from .evaluation import evaluate as run_evaluation

    swapped = os.path.isdir(model_file)  # the data folder where the model belongs
    _check_data_dir(data_dir, model_file="MODEL comes first, then DATA_DIR" if swapped else "give one model, then the data",
                    manifest=manifest)
    # Skipped files were already reported, one warning line each, as they were decoded.
    result = run_evaluation(model_file, data_dir, manifest=manifest, fold=fold, out=out, batch_size=batch_size, device=device,
                            overwrite=overwrite, progress=sys.stderr.isatty())
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        _print_evaluation(result)
    if out:
        click.echo(f"wrote {display_name(Path(out) / 'metrics.json')} and {display_name(Path(out) / 'confusion.png')}", err=True)
    if result["skipped"]:  # each was reported as it was decoded; the scores leave them out
        click.echo(f"{len(result['skipped'])} of {result['n'] + len(result['skipped'])} files skipped", err=True)
        sys.exit(1)


def _print_evaluation(result: dict[str, Any]) -> None:
    width = max(len("class"), *(columns(display_name(c)) for c in result["classes"]))
    click.echo(f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   n {result['n']}   model {display_name(result['model'])}")
    click.echo(f"{'class':<{width}}  precision  recall      f1  support")
    for name, row in result["per_class"].items():
        # None (shown "-"): no file predicted as the class (precision), no file of it (recall, F1).
        precision, recall, f1 = ("-" if row[key] is None else f"{row[key]:.4f}" for key in ("precision", "recall", "f1"))
        click.echo(f"{padded(display_name(name), width)}  {precision:>9}  {recall:>6}  {f1:>6}  {row['support']:7d}")


# ------------------------------------------------------------------ look at models


@cli.command()
@click.argument("name", required=False)
@click.option("--in-chans", type=click.IntRange(1, MAX_IN_CHANS), default=1, show_default=True)
@click.option("--no-top", is_flag=True, help="Without the classifier (include_top=False): the convolutional trunk and its global pooling, one descriptor vector per input.")
@click.option("--num-classes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--input-size", type=(click.IntRange(min=1), click.IntRange(min=1)), default=None, help=f"Height and width, at most {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} cells (default: a model's own; for an architecture, 224 224 for VGG, 64 101 otherwise).")
@click.option("--list", "list_all", is_flag=True, help="List the registered architectures.")
@click.pass_context
def summary(ctx: click.Context, name, in_chans, no_top, num_classes, input_size, list_all) -> None:
    """Keras-style layer table (output shapes, parameter counts) of NAME: an architecture
    (see --list; also what a bare `specnet summary` prints), a bundled model or a model file
    (give a file named as an architecture as ./NAME)."""
    from .catalog import bundled_models
    from .models import create_model, list_models
    from .models import summary as layer_summary

    if list_all or not name:
        click.echo("\n".join(list_models()))
        return
    if input_size and input_size[0] * input_size[1] > MAX_IMAGE_SIDE**2:  # what a model file may hold; an audio width is frames
        raise click.BadParameter(f"{input_size[0]} x {input_size[1]} is more than the {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} cells "
                                 "a summary takes", param_hint="'--input-size'")
    # An architecture's name is the architecture, whatever the current folder holds (a folder "cnn");
    # a name with a folder in it (./vgg11) is a file's, found or not.
    names_a_file = name.endswith(".safetensors") or os.sep in name or "/" in name
    if name in bundled_models() or names_a_file or (os.path.exists(name) and name not in list_models()):
        from .inference import load_model

        built = [f"--{p.replace('_', '-')}" for p in ("in_chans", "no_top", "num_classes")
                 if ctx.get_parameter_source(p) != click.core.ParameterSource.DEFAULT]
        if built:
            raise click.UsageError(f"{', '.join(built)}: for an architecture name only; {name} is a model, whose input "
                                   "channels, classes and classifier are fixed")
        model = load_model(name, device="cpu")
        spec = model.config
        if input_size and spec.features is None and tuple(input_size) != tuple(spec.image_size):
            raise click.UsageError(f"--input-size: {name} resizes every image to {spec.image_size[0]} x {spec.image_size[1]}; leave it out")
        if input_size and spec.features is not None and input_size[0] != spec.features.n_mels:
            raise click.UsageError(f"--input-size: {name} makes spectrograms of {spec.features.n_mels} mel bands, so the height is "
                                   f"{spec.features.n_mels}; the width is how many frames")
        click.echo(layer_summary(model, (spec.in_chans, *input_size) if input_size else None).rstrip("\n"))  # its backbone
        return
    if name not in list_models():
        raise SpecnetError(
            f"{name}: not an architecture ({', '.join(list_models())}), "
            f"a bundled model ({', '.join(bundled_models())}) or a model file"
        )
    if no_top and ctx.get_parameter_source("num_classes") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--num-classes: --no-top leaves the classifier out; give one of them")
    kwargs: dict[str, Any] = {"include_top": False} if no_top else {}
    net = create_model(name, num_classes=0 if no_top else num_classes, in_chans=in_chans, **kwargs)
    size = input_size or ((224, 224) if name.startswith("vgg") else (64, 101))
    click.echo(layer_summary(net, (in_chans, *size)).rstrip("\n"))


@cli.command()
def models() -> None:
    """List the bundled models with their classes, accuracy and license (one that loading would
    refuse is reported, and the others listed)."""
    from .catalog import DEFAULT_MODEL, bundled_models, read_metadata  # not torch: a listing answers at once

    bundled = bundled_models()
    if not bundled:
        click.echo("no bundled models installed")
        return
    unreadable = 0
    for name, path in bundled.items():
        try:
            meta = read_metadata(path)  # checked as loading checks it
        except ModelFileError as exc:  # reported as loading would report it; the others are still listed
            unreadable += 1
            click.echo(_error_line(exc), err=True)
            continue
        _print_bundled(name, meta, default=name == DEFAULT_MODEL)
    if unreadable:
        if len(bundled) > 1:
            click.echo(f"{unreadable} of {len(bundled)} bundled models could not be read", err=True)
        sys.exit(1)


def _print_bundled(name: str, meta: dict[str, Any], *, default: bool) -> None:
    """The entry of ``specnet models`` for the bundled model ``name`` from its checked metadata
    ``meta``. Its provenance (dataset, metrics) is free-form, which loading does not check: a
    value of another kind than the entry shows is left out."""
    from .checks import is_finite_number

    def table(key: str) -> dict[str, Any]:
        return meta[key] if isinstance(meta.get(key), dict) else {}

    def text(value: Any) -> str:
        return one_line(value) if isinstance(value, str) else ""

    dataset = table("dataset")
    click.echo(f"{name}{'  (default)' if default else ''}: {text(dataset.get('description')) or text(meta['arch'])}")
    click.echo(f"  classes:  {', '.join(map(display_name, meta['classes']))}")
    accuracy = dataset.get("accuracy") or table("metrics").get("val_accuracy")
    if text(accuracy) or is_finite_number(accuracy):
        click.echo(f"  accuracy: {text(accuracy) or f'{100 * accuracy:.2f} % (validation)'}")
    if text(dataset.get("license")):
        click.echo(f"  license:  {text(dataset['license'])}; {text(dataset.get('credit'))}".rstrip("; "))


@cli.command()
@click.argument("model_file", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def info(model_file, fmt) -> None:
    """Classes, architecture, feature settings, training data and metrics of MODEL (a bundled name or a model file)."""
    from .fileio import json_text
    from .inference import resolve_model
    from .modelfile import check_weight_shapes
    from .catalog import read_metadata

    path = resolve_model(model_file)[1]
    meta = read_metadata(path)
    if fmt == "json":
        # Loading refuses NaN in the settings a model is built from; the rest of a file's metadata
        # (a dataset's accuracy, say, in a file written before json_text) may hold it.
        click.echo(json_text(meta, indent=2))
    else:
        click.echo(f"file:         {display_name(path)}")  # a bundled model's: its credits (ATTRIBUTION.txt) lie beside it
        _print_info(meta)
    # A file whose weights do not fit still describes itself, then says why it would not load.
    check_weight_shapes(path)


def _print_info(meta: dict[str, Any]) -> None:
    """A model's metadata document as ``specnet info`` shows it: one line per setting, tables indented."""
    arch_args = _info_text(meta.get("arch_args") or {})
    click.echo(f"architecture: {meta['arch']}" + (f" ({arch_args})" if arch_args else "") + f", in_chans {meta.get('in_chans', 1)}")
    size = meta.get("image_size")
    click.echo(f"input:        {meta['input_kind']}" + (f", {meta['clip_seconds']} s clips" if meta.get("clip_seconds") else "")
               + (f", resized to {size[0]} x {size[1]} pixels (height x width)" if size else ""))
    click.echo(f"classes:      {', '.join(map(display_name, meta['classes']))}")
    if meta.get("features"):
        click.echo("features:     " + ", ".join(f"{k}={v}" for k, v in meta["features"].items()))
    for key in ("dataset", "training", "metrics", "adapted"):
        value = meta.get(key)
        if not value:
            continue
        heading = f"{key}:"
        if key == "metrics" and isinstance(value, dict) and _is_count(value.get("epoch")):  # stored from 0, as in metrics.jsonl
            training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
            total = training.get("epochs") if _is_count(training.get("epochs")) else None
            heading = f"{heading:<13} epoch {value['epoch'] + 1}" + (f" of {total}" if total else "") + " (as training counted them)"
            value = {k: v for k, v in value.items() if k != "epoch"}
        if isinstance(value, dict):
            click.echo(heading)
            for line in _info_lines(value, depth=1):
                click.echo(line)
        else:
            click.echo(f"{heading:<13} {_info_text(value)}")
    click.echo(f"format:       {meta['format_version']} (specnet {meta.get('specnet_version', '?')})")


def _is_count(value: Any) -> bool:
    """Whether a metadata value is a count (an integer >= 0, not a bool): an epoch -5 or 2.5 is no
    epoch training counted, and stays in its table as stored rather than read as one."""
    return type(value) is int and value >= 0


def _info_lines(table: dict[str, Any], depth: int) -> list[str]:
    """`table` as ``key: value`` lines indented two spaces per `depth`; a table of tables goes one level further in."""
    width = max((columns(one_line(key)) for key in table), default=0) + 1
    lines = []
    for key, value in table.items():
        if isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
            lines += [f"{'  ' * depth}{one_line(key)}:", *_info_lines(value, depth + 1)]
        else:
            lines.append(f"{'  ' * depth}{padded(one_line(key) + ':', width)} {_info_text(value)}".rstrip())
    return lines


def _info_text(value: Any, *, inner: bool = False) -> str:
    """One metadata value in a line: floats to four significant digits (``1.0``, ``0.8502``), a table as ``k=v, ...``,
    text with its line breaks and bytes that are not UTF-8 escaped (a file name, a config file's multi-line string).
    A list is ``[a, b]`` and a table inside a value ``(k=v, ...)``, so their commas are not read as the next key's."""
    if isinstance(value, dict):
        text = ", ".join(f"{one_line(k)}={_info_text(v, inner=True)}" for k, v in value.items())
        return f"({text})" if inner else text
    if isinstance(value, list):
        return "[" + ", ".join(_info_text(v, inner=True) for v in value) + "]"
    if isinstance(value, float):
        text = f"{value:.4g}"  # 1.235e+05, not 123500.0, which would look exact
        return text if any(c in text for c in ".en") else text + ".0"  # 1.0 stays a float; nan, inf
    return one_line(value) if isinstance(value, str) else json.dumps(value)


# ------------------------------------------------------------------ pictures and export


@cli.command()
@click.argument("path")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The picture to write: .png, .jpg (.jpeg), .svg or .pdf by its suffix (PNG without one; another suffix is refused).")
@click.option("--model", "-m", "model_name", default=None, help="Use this model's feature settings (default: the front-end 'specnet train' gives a model by default: 16 kHz, 64 mel bands, dB relative to the peak, 60 dB floor).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def spectrogram(path, output, model_name, overwrite) -> None:
    """Draw the log-mel spectrogram of an audio file as a picture: PNG, JPEG, SVG or PDF by OUTPUT's suffix (PNG without one)."""
    import torch

    from .audio import load_audio
    from .features import LogMelSpectrogram
    from .featureconfig import FeatureConfig
    from .fileio import check_output_path
    from .plots import picture_format, plot_spectrogram
    from .windows import loudest_sample, warn_about_level

    check_output_path(output, overwrite=overwrite)
    picture_format(output)  # a suffix it cannot write is refused before the file is decoded
    if model_name:
        from .inference import model_metadata

        settings = model_metadata(model_name).get("features")
        if settings is None:
            raise SpecnetError(f"{model_name}: an image model, with no audio feature settings to draw with")
        features = FeatureConfig.from_dict(settings)
    else:
        from .trainconfig import TrainConfig

        features = TrainConfig().feature_config()
    samples, _ = load_audio(path, sample_rate=features.sample_rate)
    name = display_name(path)
    _check_picture_length(len(samples), features, name)
    warn_about_level(loudest_sample(samples), name, silent="the picture shows nothing but the floor",
                     quiet="the picture shows mostly its rounding noise")
    with torch.no_grad():
        logmel = LogMelSpectrogram(features)(torch.from_numpy(samples)).numpy()
    plot_spectrogram(
        logmel, output, sample_rate=features.sample_rate, hop_length=features.hop_length,
        f_min=features.f_min, f_max=features.max_frequency, title=Path(path).name, overwrite=overwrite,
    )
    click.echo(f"wrote {display_name(output)}" + ("" if Path(output).suffix else " (a PNG)"), err=True)


def _check_picture_length(num_samples: int, features: Any, name: str) -> None:
    """Refuse (AudioError) a file of ``num_samples`` (at the ``features``' rate) too short for one
    uncentred frame; warn that one shorter than an FFT frame draws mostly padding."""
    rate = features.sample_rate
    if num_samples >= features.min_clip_samples:
        return
    if not features.center:
        raise AudioError(f"{name}: {num_samples / rate:g} s is shorter than one FFT frame ({features.n_fft / rate:g} s), "
                         "which the front-end takes whole (center=False): there is no frame to draw")
    frames = features.num_frames(num_samples)
    logging.getLogger("specnet").warning("%s: %g s is shorter than one FFT frame (%g s): the picture is %d frame%s, mostly padding",
                                         name, num_samples / rate, features.window_length / rate, frames, "" if frames == 1 else "s")


@cli.command()
@click.argument("model_file", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def export(model_file, fmt, output, overwrite) -> None:
    """Export MODEL (a bundled name or a model file) to ONNX: an audio model with its log-mel front-end
    (input: raw samples), an image model taking images (batch, channels, height, width) in [0, 1]."""
    from .export import export_onnx

    export_onnx(model_file, output, overwrite=overwrite)
    click.echo(f"wrote {display_name(output)}", err=True)


# ------------------------------------------------------------------ entry point


#: What click >= 8.2 raises for a bare `specnet` (8.1 shows the help and exits 0 without one).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Terminated(BaseException):
    """SIGTERM, raised where the main thread is, so that cleanup runs (the run lock, temporary
    files) and the command says why it stopped."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _stopped(how: str, exc: BaseException) -> str:
    """``interrupted``, or ``interrupted; continue with: ...`` when the command said how to go on."""
    return f"{how}; {one_line(str(exc))}" if str(exc) else how


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors become one line on stderr and a non-zero exit code."""
    on_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: glibc's malloc keeps blocks up to this size in its heaps rather than mapping each afresh: a
#: batch's layer outputs (32 MB for MAX_BATCH_CELLS, 52 MB for an ESC-10 training batch) ...
_MMAP_THRESHOLD = 64 << 20
#: ... and returns freed memory to the system only past this much at a heap's top.
_TRIM_THRESHOLD = 128 << 20


def _keep_freed_memory() -> None:
    """Make glibc's malloc keep the memory that one batch frees for the next one.

    Each forward and backward pass allocates and frees layer outputs of tens of MB. By
    default glibc maps blocks over 32 MB afresh and trims freed memory at a heap's top
    past twice its largest mapped block, so every batch touched its pages anew: page
    faults took a third of the CPU time of classify. A user's own malloc settings win.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # no such name: not glibc (musl, whose mallopt does nothing)
        return
    if libc.startswith("glibc"):
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (a fixed one: no longer adjusted as blocks are freed)
        mallopt(-1, _TRIM_THRESHOLD)  # M_TRIM_THRESHOLD


def _main(argv: list[str] | None) -> None:
    # Idle OpenMP threads sleep instead of spinning (read when torch loads, so set it
    # before any command imports torch). With spinning, a machine busy with other jobs
    # made a 2-thread forward pass up to 30x slower; on an idle one it costs ~nothing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _keep_freed_memory()
    # A picture over Pillow's size limit is refused in one line (image.load_image): not also
    # Pillow's own warning about it.
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    try:
        cli.main(args=argv, prog_name="specnet", standalone_mode=False)
    except click.exceptions.Abort as exc:  # Ctrl-C in a command: click makes it an Abort
        cause = exc.__cause__
        click.echo(_stopped("interrupted", cause) if isinstance(cause, KeyboardInterrupt) else "aborted", err=True)
        sys.exit(130)
    except _NO_ARGS_IS_HELP as exc:  # bare `specnet`: the help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a usage error: one line, as specnet's own errors are
        # The parser's own errors (an option missing its value) come without a context: the command is named in argv.
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else next(
            (f"specnet {word}" for word in (sys.argv[1:] if argv is None else argv) if word in cli.commands), "specnet")
        where = f" (see '{command} --help')" if isinstance(exc, click.UsageError) else ""
        click.echo(f"error: {one_line(exc.format_message()).rstrip('.')}{where}", err=True)
        sys.exit(exc.exit_code)
    except SpecnetError as exc:
        if _debug_enabled():
            raise
        click.echo(_error_line(exc), err=True)
        sys.exit(2 if isinstance(exc, ParameterError) else 1)  # a value given on the command line: a usage error
    except KeyboardInterrupt as exc:
        click.echo(_stopped("interrupted", exc), err=True)
        sys.exit(130)
    except _Terminated as exc:
        click.echo(_stopped("terminated", exc), err=True)
        sys.exit(143)
    except OSError as exc:  # the machine, not a bug: a full disk under standard output, say
        if _debug_enabled():
            raise
        name = f"{display_name(exc.filename)}: " if exc.filename else ""
        click.echo(f"error: {name}{one_line(exc.strerror or str(exc))}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: keep it to one line unless asked for more
        if _debug_enabled():
            raise
        click.echo(f"error: internal error {type(exc).__name__}: {one_line(str(exc))} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
