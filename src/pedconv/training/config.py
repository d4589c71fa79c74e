"""The training options every task shares, YAML configs, their precedence and their checks.

Precedence, lowest to highest: the parser's defaults (the task's recipe), the task's
``--preset``, the ``--config`` YAML file (when resuming without one: the run's ``args.yaml``),
the command-line flags (:func:`config_layer`, :func:`resolve_config`); :func:`validate_args`
refuses what cannot work before anything is loaded. A YAML file's keys are argparse destination names (``batch_size``,
``model_kwargs``, ...); unknown keys are an error that names the file and suggests the
closest option. YAML strings are converted with the option's own type (so ``lr: 1e-4``,
which YAML reads as a string, works), and checked against its choices.
``model_kwargs`` may be a mapping in YAML; ``--model-kwargs k=v ...`` on the command line
updates it key by key (values parsed as YAML: ``rank=2``, ``components=[gamma]``).
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
import yaml

from ..configs import resolve
from ..errors import ConfigError, RunError, TrainError, TrainOptionsError, UsageError
from ..models import model_entrypoint
from ..utils.atomic import atomic_write_text
from ..utils.kv import KeyValueError, parse_key_values
from ..utils.options import (
    check_output_folder,
    non_negative,
    non_negative_int,
    number,
    positive,
    positive_int,
)
from .distributed import resolve_device
from .recipe import SCHEDULES, check_optimizer
from .run_folder import output_folder, previous_args_yaml

if TYPE_CHECKING:
    from .task import Task

__all__ = [
    "RENAMED_OPTIONS",
    "ConfigError",
    "add_model_kwargs_argument",
    "apply_mapping",
    "build_train_parser",
    "config_layer",
    "load_yaml_config",
    "parse_model_kwargs",
    "preset_values",
    "resolve_config",
    "validate_args",
    "write_args_yaml",
]

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``--compile``: off, or a ``torch.compile`` mode."""


RENAMED_OPTIONS = {"dyconv_anneal_epochs": "attention_anneal_epochs"}
"""Former option names (keys of older YAML files, ``args.yaml`` and checkpoints) -> their names now."""

# Other training scripts' names for our options, for "did you mean" hints only.
_HINTS = {"learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "lr_base": "lr_base_batch",
          "label_smoothing": "smoothing", "num_workers": "workers", "arch": "model", "output_dir": "output",
          "warmup_lr_init": "warmup_lr", "mixup_alpha": "mixup", "cutmix_alpha": "cutmix",
          "clip_grad_norm": "clip_grad"}


def parse_model_kwargs(items: Union[Sequence[str], Mapping[str, Any], None]) -> dict[str, Any]:
    """``["rank=2", "components=[gamma]"]`` -> ``{"rank": 2, "components": ["gamma"]}`` (values via ``yaml.safe_load``).

    >>> parse_model_kwargs(["rank=2", "components=[gamma, phi]", "sigma=learned", "width=8"])
    {'rank': 2, 'components': ['gamma', 'phi'], 'sigma': 'learned', 'width': 8}
    >>> parse_model_kwargs(["rank"])
    Traceback (most recent call last):
    ...
    pedconv.errors.ConfigError: --model-kwargs expects key=value, got 'rank'
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): v for k, v in items.items()}
    try:
        return parse_key_values(items)
    except KeyValueError as e:
        raise ConfigError(f"--model-kwargs expects key=value, got {e.item!r}" if e.syntax
                          else f"--model-kwargs {e}") from None


class _ModelKwargsAction(argparse.Action):
    """Parses ``k=v`` items and merges them over the current value (e.g. from a YAML file)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        try:
            new = parse_model_kwargs(values)
        except ConfigError as e:
            parser.error(str(e))
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), **new})


def add_model_kwargs_argument(group: Any, help: str) -> None:
    """The ``--model-kwargs KEY=VALUE ...`` option (merged over a YAML mapping) of ``train`` and ``eval``."""
    group.add_argument("--model-kwargs", nargs="*", default={}, action=_ModelKwargsAction, metavar="KEY=VALUE",
                       help=help)


def build_train_parser(parser: Optional[argparse.ArgumentParser], task: Task) -> argparse.ArgumentParser:
    """The training options of ``task``, added to ``parser`` (the CLI's sub-command) or to a new
    parser: the options every task shares, the task's own
    (:meth:`~pedconv.training.task.Task.add_arguments`) and its defaults.

    >>> from pedconv.tasks.classification import Classification
    >>> parser = build_train_parser(None, Classification())
    >>> args = parser.parse_args(["--model", "cifar_resnet20", "--model-kwargs", "width=8"])
    >>> args.model_kwargs, args.batch_size, args.data
    ({'width': 8}, 128, 'fashion_mnist')
    """
    p = parser or argparse.ArgumentParser(prog=task.train_command, description="Train a registered model.")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="YAML file of option values (keys = option names with '_'), or the name of a shipped one "
                        "(configs/*.yaml); command-line flags override it")
    if task.presets:
        # --quick first: a YAML file's `preset` key then converts with --preset's rules (the last action of a dest).
        if "quick" in task.presets:
            p.add_argument("--quick", dest="preset", action="store_const", const="quick",
                           help="same as --preset quick")
        p.add_argument("--preset", choices=sorted(task.presets), default=None,
                       help="a named set of option values (under --config and the flags): "
                            + "; ".join(f"{k}: {v.get('_help', '')}" for k, v in sorted(task.presets.items())))

    g = p.add_argument_group("model")
    g.add_argument("--model", default=task.default_model, help="a name from pedconv.list_models()")
    add_model_kwargs_argument(g, "builder options, values parsed as YAML (e.g. width=8 rank=2 components=[gamma])")
    g.add_argument("--init-from", default=None, metavar="RUN|CHECKPOINT|STATE_DICT",
                   help="start from a trained run's weights (its folder or a .pt), or a state-dict file "
                        "(torchvision/timm ResNet weights, the authors' PEDConv-ResNet file): the same architecture "
                        "loads them; a converting model (pedconv_*, odconv_*, ...) is built from that static network "
                        "with its function kept; a detector or segmenter takes the classifier as its backbone "
                        "(one line reports what was loaded; a start that fits nothing is an error)")

    task.add_arguments(p)

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=10)
    g.add_argument("--batch-size", type=positive_int, default=128, help="images per process per forward pass")
    g.add_argument("--val-batch-size", type=positive_int, default=None, help="default: 2 x --batch-size")
    g.add_argument("--grad-accum-steps", type=positive_int, default=1,
                   help="micro-batches per optimizer step (global batch = batch-size x processes x this)")
    g.add_argument("--opt", default="sgd", help="timm optimizer name (sgd = SGD with momentum; adamw, lamb, ...)")
    g.add_argument("--lr", type=positive, default=0.1, help="learning rate for --lr-base-batch images per step")
    g.add_argument("--lr-scale", choices=("linear", "sqrt", "none"), default="linear",
                   help="scale --lr by (global batch / --lr-base-batch) (linear), its square root, or not at all")
    g.add_argument("--lr-base-batch", type=positive_int, default=256, help="reference batch of --lr")
    g.add_argument("--momentum", type=number(float, 0, 1, high_open=True), default=0.9)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True, help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=non_negative, default=5e-4)
    g.add_argument("--wd-norm-bias", action=argparse.BooleanOptionalAction, default=False,
                   help="also decay biases and normalisation parameters (default: they get no weight decay)")
    g.add_argument("--wd-skip", nargs="+", default=None, metavar="SUBSTRING",
                   help="instead of the bias/norm rule: no weight decay exactly for the parameters whose names "
                        "contain one of these (the authors' code: --wd-skip bn)")
    g.add_argument("--sched", choices=SCHEDULES, default="cosine", help="timm lr schedule, updated every step")
    g.add_argument("--warmup-epochs", type=non_negative, default=0.0,
                   help="linear warm-up length (may be fractional)")
    g.add_argument("--warmup-lr", type=non_negative, default=1e-5, help="lr at the start of the warm-up")
    g.add_argument("--warmup-prefix", action=argparse.BooleanOptionalAction, default=True,
                   help="warm-up first, then the schedule over the remaining epochs (default); with "
                        "--no-warmup-prefix the warm-up overlaps the start of the schedule (timm's default). With "
                        "the prefix, step/multistep milestones count from the end of the warm-up")
    g.add_argument("--min-lr", type=non_negative, default=0.0, help="final lr of cosine/poly/tanh")
    g.add_argument("--decay-epochs", type=positive, default=30.0, help="step schedule period")
    g.add_argument("--decay-milestones", type=non_negative, nargs="+", default=[30.0, 60.0, 80.0],
                   help="multistep epochs")
    g.add_argument("--decay-rate", type=number(float, 0, 1, low_open=True), default=0.1, help="step/multistep factor")
    g.add_argument("--poly-power", type=positive, default=0.9,
                   help="power of the poly schedule (0.9: mmsegmentation's PolyLR and the UperNet/PSPNet papers)")
    g.add_argument("--clip-grad", type=positive, default=None, help="gradient clipping threshold (off by default)")
    g.add_argument("--clip-mode", choices=("norm", "value", "agc"), default="norm")

    g = p.add_argument_group("dynamic convolutions")
    g.add_argument("--infomax-weight", type=non_negative, default=None,
                   help="lambda of the PEDConv info-max term (default: pedconv.INFOMAX_WEIGHT = 1e-3)")
    g.add_argument("--attention-anneal-epochs", type=non_negative, default=10.0,
                   help="the attention temperatures are annealed linearly over these epochs: DY-Conv's softmax "
                        "temperature 30 -> 1, KernelWarehouse's tau 1 -> 0")
    # its former name (run folders' args.yaml and checkpoints keep it; they still resume)
    g.add_argument("--dyconv-anneal-epochs", dest="attention_anneal_epochs", type=non_negative, help=argparse.SUPPRESS)

    g = p.add_argument_group("hardware and distribution")
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads per process")
    g.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU; float16 on CUDA by default)")
    g.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default=None)
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and inputs")
    g.add_argument("--compile", choices=COMPILE_MODES, default="none",
                   help="torch.compile the training forward and backward (evaluation stays eager): default, "
                        "reduce-overhead (CUDA graphs on a GPU: no launch cost per kernel), max-autotune; "
                        "none = eager (default)")
    g.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend with --compile (default inductor; aot_eager or eager to debug)")
    g.add_argument("--sync-bn", choices=("auto", "on", "off"), default="auto",
                   help="SyncBatchNorm in multi-process CUDA runs (auto = on there; never on CPU)")
    g.add_argument("--dist-bn", choices=("reduce", "broadcast", "none"), default="reduce",
                   help="without SyncBatchNorm: average (reduce) or copy rank 0's (broadcast) BN statistics over "
                        "processes before each evaluation")
    g.add_argument("--find-unused-parameters", choices=("auto", "on", "off"), default="auto",
                   help="DDP option; auto = on only if a probe step leaves some parameter without a gradient")

    g = p.add_argument_group("run, checkpoints and logging")
    g.add_argument("--output", default=None, help="run folder (default: runs/<model>-<timestamp>)")
    g.add_argument("--overwrite", action="store_true",
                   help="reuse a non-empty --output, replacing a previous run's files")
    g.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a checkpoint (auto: <output>/last.pt if it exists)")
    g.add_argument("--checkpoint-every-steps", type=positive_int, default=None,
                   help="also write last.pt every N optimizer steps (besides every epoch)")
    g.add_argument("--skip-nonfinite", type=non_negative_int, default=0, metavar="N",
                   help="skip up to N optimizer steps whose loss is nan/inf (0: a non-finite loss stops the run, "
                        "keeping the last good checkpoint)")
    g.add_argument("--seed", type=non_negative_int, default=0)
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (warn-only), no cuDNN autotuning: an interrupted and resumed run "
                        "reproduces an uninterrupted one")
    g.add_argument("--log-every", type=positive_int, default=50, help="plain-log step period")
    g.add_argument("--quiet", action="store_true", help="no progress output (log.txt still written)")
    if task.defaults:
        p.set_defaults(**task.defaults)
    return p


def preset_values(parser: argparse.ArgumentParser, task: Task, name: Optional[str]) -> dict[str, Any]:
    """The option values of ``task``'s preset ``name`` (none for None), checked like a YAML file's.

    >>> from pedconv.tasks.classification import Classification
    >>> preset_values(build_train_parser(None, Classification()), Classification(), None)
    {}
    """
    if name is None:
        return {}
    values = {k: v for k, v in task.presets[name].items() if not k.startswith("_")}
    return apply_mapping(parser, values, f"--preset {name}")


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}


def _coerce(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """A YAML/mapping value converted like the command line would convert it."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {why}")

    if value is None:
        return None
    if key == "model_kwargs":
        if isinstance(value, Mapping):
            return parse_model_kwargs(value)
        if isinstance(value, (list, tuple)):
            try:
                return parse_model_kwargs([str(v) for v in value])
            except ConfigError as e:
                raise bad(str(e)) from None
        raise bad(f"expected a mapping, got {value!r}")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {value!r}")
        return value
    convert = action.type if callable(action.type) else None

    def one(v: Any) -> Any:
        if convert is not None and isinstance(v, (str, int, float)) and not isinstance(v, bool):
            try:  # through str, as on the command line: int("3.5") fails instead of truncating
                v = convert(v if isinstance(v, str) else str(v))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
                raise bad(f"invalid value {v!r} ({e})") from None
        if action.choices is not None and v not in action.choices:
            raise bad(f"{v!r} is not one of {', '.join(map(str, action.choices))}")
        return v

    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        values = value if isinstance(value, (list, tuple)) else [value]
        return [one(v) for v in values]
    if isinstance(value, (list, dict)):
        raise bad(f"expected a single value, got {value!r}")
    return one(value)


def apply_mapping(parser: argparse.ArgumentParser, mapping: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate and convert ``mapping`` (option dest -> value) against ``parser``; unknown keys raise.

    >>> from pedconv.tasks.classification.command import build_parser
    >>> apply_mapping(build_parser(), {"lr": "1e-4", "epochs": 3}, "x.yaml")
    {'lr': 0.0001, 'epochs': 3}
    >>> apply_mapping(build_parser(), {"learning_rate": 0.1}, "x.yaml")
    Traceback (most recent call last):
    ...
    pedconv.errors.ConfigError: x.yaml: unknown key 'learning_rate' (did you mean 'lr'?)
    >>> apply_mapping(build_parser(), {"dyconv_anneal_epochs": 5}, "args.yaml")  # a former name
    {'attention_anneal_epochs': 5.0}
    """
    actions = _actions(parser)
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        dest = str(key).replace("-", "_")
        dest = RENAMED_OPTIONS.get(dest, dest)
        if dest not in actions or dest == "config":
            close = [_HINTS[dest]] if dest in _HINTS else difflib.get_close_matches(
                dest, [d for d in actions if d != "config"], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        out[dest] = _coerce(actions[dest], dest, value, source)
    return out


def load_yaml_config(path: Union[str, os.PathLike], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config into validated option values for ``parser``.

    Raises:
        ConfigError: missing file, bad YAML, not a mapping, unknown keys, invalid values.
    """
    try:
        path = resolve(path)  # a file, or a shipped config's name (pedconv/configs/)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must be a mapping of option names to values, got {type(data).__name__}")
    return apply_mapping(parser, data, str(path))


def write_args_yaml(config: Mapping[str, Any], path: Path, info: Mapping[str, Any]) -> None:
    """Write a run's resolved options as ``args.yaml`` (usable as ``--config``), ``info`` as comments, atomically.

    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "args.yaml"
    >>> write_args_yaml({"epochs": 2}, p, {"processes": 1}); print(p.read_text(), end="")
    # pedconv train: resolved options of this run (usable as --config).
    # processes: 1
    epochs: 2
    """
    header = ("# pedconv train: resolved options of this run (usable as --config).\n"
              + "".join(f"# {k}: {v}\n" for k, v in info.items()))
    atomic_write_text(path, header + yaml.safe_dump(dict(config), sort_keys=True))


# ----------------------------------------------------------------------------- layering and checks
def validate_args(args: argparse.Namespace, task: Task) -> None:
    """Refuse, before anything is loaded, options that cannot work: :class:`~pedconv.errors.TrainOptionsError`
    (a usage error) for options that do not make sense or do not work together,
    :class:`~pedconv.errors.TrainError` for a device or an output folder this machine does not have.

    (Each option's own range is checked by its argparse ``type``, for YAML configs too.)

    >>> from pedconv.tasks.classification import Classification
    >>> task = Classification()
    >>> validate_args(build_train_parser(None, task).parse_args(["--resume", "auto"]), task)
    Traceback (most recent call last):
    ...
    pedconv.errors.TrainOptionsError: --resume auto needs --output DIR (the run folder to continue)
    """
    try:
        model_entrypoint(args.model)
        check_optimizer(args.opt)
    except ValueError as e:
        raise TrainOptionsError(str(e)) from None
    if not isinstance(args.model_kwargs, dict):
        raise TrainOptionsError(f"model_kwargs must be a mapping, got {args.model_kwargs!r}")
    _check_combinations(args)
    task.check_args(args)
    _check_machine(args)


def _check_combinations(args: argparse.Namespace) -> None:
    if args.resume == "auto" and args.output is None:
        raise TrainOptionsError("--resume auto needs --output DIR (the run folder to continue)")
    if args.resume not in (None, "auto") and not Path(args.resume).is_file():
        raise TrainOptionsError(f"--resume {args.resume}: no such checkpoint file")
    if args.warmup_epochs > args.epochs:
        raise TrainOptionsError(f"--warmup-epochs {args.warmup_epochs} is longer than --epochs {args.epochs}")
    _check_compile(args)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    step = args.batch_size * processes * args.grad_accum_steps
    if getattr(args, "train_subset", None) is not None and args.train_subset < step:
        raise TrainOptionsError(
            f"--train-subset {args.train_subset} is smaller than one optimizer step of {step} images (--batch-size "
            f"{args.batch_size} x {processes} process(es) x --grad-accum-steps {args.grad_accum_steps}); use a "
            "smaller --batch-size or a larger --train-subset")


def _check_compile(args: argparse.Namespace) -> None:
    """``--compile`` and ``--compile-backend`` go together, with a backend torch knows."""
    mode, backend = getattr(args, "compile", "none"), getattr(args, "compile_backend", "inductor")
    if mode == "none":
        if backend != "inductor":
            raise TrainOptionsError(f"--compile-backend {backend} needs --compile MODE (compilation is off)")
        return
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise TrainOptionsError(f"--compile-backend {backend}: not a torch.compile backend; use one of {known}")
    if mode != "default" and backend != "inductor":
        raise TrainOptionsError(f"--compile {mode} is a mode of the inductor backend, not of {backend}; "
                                "use --compile default with other backends")


def _check_machine(args: argparse.Namespace) -> None:
    """The device exists here and the run folder can be written (before the data are loaded)."""
    try:
        resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    except UsageError as e:
        raise TrainOptionsError(str(e)) from None
    try:
        check_output_folder(output_folder(args))
    except RunError as e:
        raise TrainError(str(e)) from None


def _yaml_layer(parser: argparse.ArgumentParser, config: Optional[str], resume: Optional[str],
                output: Optional[str]) -> dict[str, Any]:
    path = config or previous_args_yaml(resume, output)
    return load_yaml_config(path, parser) if path else {}


def config_layer(args: argparse.Namespace, parser: argparse.ArgumentParser, task: Task) -> dict[str, Any]:
    """The option values that lie under the command line: the task's ``--preset`` (``--quick``),
    then the ``--config`` YAML file or, when resuming without one, the resumed run's ``args.yaml``
    (the CLI parses again with them as defaults).

    Raises:
        ConfigError: the file is missing or invalid (a usage error).
    """
    yaml_values = _yaml_layer(parser, args.config, args.resume, args.output)
    preset = yaml_values.get("preset", getattr(args, "preset", None))
    return {**preset_values(parser, task, preset), **yaml_values}


def resolve_config(config: Union[str, os.PathLike, Mapping[str, Any], argparse.Namespace, None],
                   task: Task, **overrides: Any) -> argparse.Namespace:
    """Options from a YAML file path, a mapping (option names as keys; a ``config`` key names a
    YAML file), a Namespace, or defaults.

    Precedence: defaults < ``config["config"]`` YAML (when resuming without one: the run's
    ``args.yaml``) < the other keys of ``config`` < ``overrides``.

    Raises:
        TrainOptionsError: unknown or invalid options, or options that do not work together.

    >>> from pedconv.tasks.classification import Classification
    >>> a = resolve_config({"model": "cifar_resnet20", "epochs": 2}, Classification(), lr=0.05)
    >>> a.model, a.epochs, a.lr, a.batch_size
    ('cifar_resnet20', 2, 0.05, 128)
    """
    parser = build_train_parser(None, task)
    if isinstance(config, (str, os.PathLike)):
        values: dict[str, Any] = {"config": os.fspath(config)}
    elif isinstance(config, argparse.Namespace):
        values = dict(vars(config))
        values.pop("command", None)
        values.pop("action", None)  # `pedconv <task> train`'s sub-command word
    else:
        values = dict(config or {})
    values.update(overrides)
    args = parser.parse_args([])
    try:
        layer = _yaml_layer(parser, values.pop("config", None), values.get("resume"), values.get("output"))
        given = apply_mapping(parser, values, "train() config")
        preset = given.get("preset", layer.get("preset"))
        for k, v in {**preset_values(parser, task, preset), **layer, **given}.items():
            setattr(args, k, v)
    except ConfigError as e:
        raise TrainOptionsError(str(e)) from None
    validate_args(args, task)
    return args
