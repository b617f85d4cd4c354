"""`run.py`'s dispatch: the command table, the flags each command reads, and one line for each error.

The commands are in `data`, `dalle1`, `unclip` and `dalle3` (one module a generation; `serve` is here); each
takes the loaded config and reads its flags from `common.FLAGS`.
"""

from __future__ import annotations

import logging
import pathlib
import sys

from absl import app, flags
from absl import logging as absl_logging

from dalle_jax.cli import common, dalle1, dalle3, data, unclip
from dalle_jax.cli.common import FLAGS


def serve(config) -> None:
    import importlib.util

    del config  # each model is served with the config it trained with
    if importlib.util.find_spec("gradio") is None:
        raise app.UsageError("serve needs Gradio: pip install -e '.[demo]'")
    from dalle_jax.serve import build_page

    page = build_page(common.workdir())
    print(f"serving {common.workdir()} at http://{FLAGS.host}:{FLAGS.port} (Ctrl-C stops)")
    page.queue().launch(server_name=FLAGS.host, server_port=FLAGS.port, show_error=True)


COMMANDS = {
    "build-data": data.build_data,
    "show-data": data.show_data,
    "check-oracle": data.check_oracle,
    "train-text-tokenizer": dalle1.train_text_tokenizer,
    "train-image-tokenizer": dalle1.train_image_tokenizer,
    "import-weights": dalle1.import_weights,
    "train": dalle1.train,
    "train-clip": dalle1.train_clip,
    "eval-clip": dalle1.eval_clip,
    "generate": dalle1.generate,
    "eval": dalle1.evaluate,
    "train-captioner": dalle3.train_captioner,
    "caption": dalle3.caption,
    "recaption": dalle3.recaption,
    "dalle3-experiment": dalle3.experiment,
    "train-prior": unclip.train_prior,
    "train-decoder": unclip.train_decoder,
    "train-upsampler": unclip.train_upsampler,
    "unclip-generate": unclip.generate,
    "variations": unclip.variations,
    "interpolate": unclip.interpolate,
    "text-diff": unclip.text_diff,
    "serve": serve,
}


# The flags each command reads, besides --config, --workdir, --verbose and --distributed: any other
# given is refused (a flag a command ignores is a mistake the user should hear about).
COMMAND_FLAGS = {
    "build-data": (), "show-data": ("split", "num", "out"), "check-oracle": ("num",), "train-text-tokenizer": (),
    "train-image-tokenizer": ("resume",), "import-weights": ("kind", "source"), "train": ("resume",),
    "train-clip": ("resume",), "eval-clip": (), "generate": ("prompt", "num_samples", "rerank", "keep", "out"),
    "eval": ("rerank",), "train-captioner": ("mode", "resume"), "caption": ("image", "mode"), "recaption": ("mode",),
    "dalle3-experiment": (), "train-prior": ("resume",), "train-decoder": ("resume",), "train-upsampler": ("stage", "resume"),
    "unclip-generate": ("prompt", "num_samples", "out", "weights"),
    "variations": ("image", "num_samples", "out", "weights"),
    "interpolate": ("image", "num_samples", "out"), "text-diff": ("image", "prompt", "num_samples", "out"),
    "serve": ("host", "port"),
}

# The config section a command reads beyond the shared ones, and a shipped config that has it.
COMMAND_SECTIONS = {
    "train-image-tokenizer": ("image_tokenizer", "shapes_dalle.py"), "generate": ("image_tokenizer", "shapes_dalle.py"),
    "eval": ("eval", "shapes_dalle.py"), "train-captioner": ("captioner", "shapes_dalle3.py"),
    "caption": ("captioner", "shapes_dalle3.py"), "recaption": ("captioner", "shapes_dalle3.py"),
    "dalle3-experiment": ("experiment", "shapes_dalle3.py"), "train-prior": ("prior", "shapes_unclip.py"),
    "train-decoder": ("decoder", "shapes_unclip.py"), "train-upsampler": ("upsampler", "shapes_unclip.py"),
    **dict.fromkeys(("unclip-generate", "variations", "interpolate", "text-diff"), ("upsampler", "shapes_unclip.py")),
}

# The commands that read what earlier ones trained into the work dir (the rest create it).
READ_A_WORKDIR = ("eval-clip", "generate", "eval", "caption", "recaption", "unclip-generate", "variations",
                  "interpolate", "text-diff", "serve")

DISTRIBUTED_FLAGS = ("coordinator", "num_processes", "process_id", "heartbeat_timeout")


def check_flags(command: str) -> None:
    """Refuses a flag `command` does not read, and an --out Pillow cannot write."""
    command_flags = sorted(set().union(*COMMAND_FLAGS.values()))
    unused = [name for name in command_flags if FLAGS[name].present and name not in COMMAND_FLAGS[command]]
    if unused:
        read = ", ".join(f"--{name.replace('_', '-')}" for name in COMMAND_FLAGS[command]) or "none"
        raise app.UsageError(f"{command} does not read {', '.join('--' + n.replace('_', '-') for n in unused)} "
                             f"(the flags it reads: {read})")
    if FLAGS.out:
        from PIL import Image

        suffix = pathlib.Path(FLAGS.out).suffix.lower()
        if Image.registered_extensions().get(suffix) not in Image.SAVE:
            raise app.UsageError(f"--out {FLAGS.out}: name a PNG (or another image file: .jpg, .webp)")


def parse_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """absl flags for the known flags; `--config.KEY=VALUE` overrides are kept for `load_config`."""
    if any(a in ("-h", "--help") for a in argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    try:
        positional = FLAGS([_underscored(a) for a in argv if not a.startswith("--config.")])
    except flags.Error as error:
        sys.exit(f"error: {error} (python run.py --help lists the flags)")
    return positional, overrides


def _underscored(arg: str) -> str:
    """`--num-samples=4` -> `--num_samples=4`: flags may be spelt with hyphens."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + sep + value


def main(parsed: tuple[list[str], list[str]]) -> None:
    positional, overrides = parsed
    if len(positional) != 2 or positional[1] not in COMMANDS:
        given = positional[1] if len(positional) > 1 else "nothing"
        raise app.UsageError(f"expected one command of {', '.join(COMMANDS)}; got {given}")
    if not FLAGS.config and FLAGS.weights:
        FLAGS.config = str(pathlib.Path(__file__).resolve().parents[2] / "configs" / "karlo.py")
    if not FLAGS.config:
        raise app.UsageError("--config is required, e.g. --config configs/shapes_toy.py")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
    logging.getLogger("dalle_jax").setLevel(logging.INFO)
    from dalle_jax.config import ConfigError, load_config

    try:
        check_flags(positional[1])
    except app.UsageError as error:
        sys.exit(f"error: {error} (python run.py --help lists the commands and flags)")
    try:
        config = load_config(FLAGS.config, overrides)
    except ConfigError as error:
        sys.exit(f"config error: {error}")
    section, example = ("karlo", "karlo.py") if FLAGS.weights else COMMAND_SECTIONS.get(positional[1], (None, None))
    if section and section not in config:
        sys.exit(f"config error: {positional[1]} reads the config's {section!r} section, which {FLAGS.config} has "
                 f"not: use a config such as configs/{example}")
    try:
        if FLAGS.distributed:
            _initialize_distributed()
        elif given := [f"--{name}" for name in DISTRIBUTED_FLAGS if FLAGS[name].present]:
            raise app.UsageError(f"{', '.join(given)} only mean something with --distributed")
        if positional[1] in READ_A_WORKDIR and not FLAGS.weights and not common.workdir().is_dir():
            raise app.UsageError(f"the work dir {common.workdir()} does not exist: train into it first "
                                 "(or check --workdir)")
        COMMANDS[positional[1]](config)
    except app.UsageError as error:
        sys.exit(f"error: {error} (python run.py --help lists the commands and flags)")
    except Exception as error:  # noqa: BLE001  (a user sees one line; the traceback goes to a file)
        sys.exit(_one_line(error))


def _initialize_distributed() -> None:
    """`jax.distributed.initialize` with the flags given (a launcher JAX detects supplies the rest).
    A process that dies stops the others after `--heartbeat_timeout` seconds, with JAX's message
    that another task died, rather than leaving them waiting in a collective."""
    import jax

    try:
        jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id,
                                   heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
    except ValueError as error:  # no cluster found: JAX lists what it looked for
        raise app.UsageError(f"--distributed: {error} Start each process under a cluster launcher JAX detects "
                             "(SLURM, Open MPI, a Cloud TPU pod, Kubernetes), or give --coordinator HOST:PORT "
                             "--num_processes N --process_id I")
    logging.getLogger("dalle_jax.run").info("process %d of %d, %d local of %d devices", jax.process_index(),
                                            jax.process_count(), jax.local_device_count(), jax.device_count())


def _one_line(error: Exception) -> str:
    """`error: MESSAGE [traceback: FILE]`: the traceback written to WORKDIR/last_error.log (or the
    temporary directory), and printed as well with --verbose."""
    import tempfile
    import traceback

    workdir = pathlib.Path(FLAGS.workdir) if FLAGS.workdir else None
    log = (workdir if workdir and workdir.is_dir() else pathlib.Path(tempfile.gettempdir())) / "last_error.log"
    text = "".join(traceback.format_exception(error))
    try:
        log.write_text(text)
        where = f" [traceback: {log}]"
    except OSError:  # a full or read-only disk
        where = " [--verbose prints the traceback]"
    if FLAGS.verbose:
        print(text, file=sys.stderr, end="")
    message = str(error).strip()
    if not type(error).__module__.startswith("dalle_jax") and not isinstance(error, (FileNotFoundError,
                                                                                    FileExistsError)):
        message = f"{type(error).__name__}: {message}".rstrip(": ")  # a library's error: its kind helps
    return f"error: {message}{where}"
