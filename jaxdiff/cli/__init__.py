"""The command-line programs (`jaxdiff-train` / train.py in `jaxdiff.cli.train`, `jaxdiff-sample` /
sample.py in `jaxdiff.cli.sample`) and the plumbing they share: `--config` by name or path, and
every bad flag, config file or config override ending the program with exit code 2 and one line
on stderr naming it (absl alone would print a traceback for a misspelt `--config.optim.lrr`, and
exit with 1)."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys

from absl import app, flags

from jaxdiff.errors import error_summary

USAGE_ERROR = 2


def fail(message: str, code: int = USAGE_ERROR) -> None:
    """Print `error: message` as one line on stderr and exit with `code` (2: a usage error)."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit, not sys.exit: nothing has been written yet, and a failed Orbax restore leaves
    # coroutines whose garbage collection at interpreter exit would print a traceback after this
    # line ("Exception ignored in ...").
    os._exit(code)


def _offending_argument(argv: list[str], key: str) -> str:
    for argument in argv[1:]:
        name = argument.split("=", 1)[0]
        if name.startswith("--") and (name.endswith("." + key) or f".{key}." in name):
            return name
    return key


def run_program(program, args, doc: str) -> None:
    """`app.run(program)` with one-line flag errors (`parse_flags`); `program(args, argv)` gets
    the namespace of flag holders `args`. `--help` shows those flags and `doc`, whether a
    console script or a wrapper such as train.py started the program."""
    sys.modules["__main__"].__doc__ = doc  # absl's usage text
    for holder in vars(args).values():  # absl's --help lists the main module's flags
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])
    app.run(functools.partial(program, args), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-line errors (use as `app.run(main, flags_parser=...)`)."""
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001 - every failure is reported in one line
        _fail_parsing(argv, error)


def _fail_parsing(argv: list[str], error: Exception) -> None:
    """One line for an exception raised while defining or parsing the flags."""
    from jaxdiff.errors import ConfigError

    if isinstance(error.__context__, ConfigError):  # resolve_config's, wrapped by absl
        fail(error.__context__)
    if isinstance(error, flags.Error):  # unknown flag, unparsable value, missing required flag
        lines = [line for line in str(error).splitlines() if line.strip()]
        # A config file that raised: its error is the traceback's last line.
        fail(f"{lines[0]} {lines[-1]}" if "Traceback" in str(error) else " ".join(lines))
    if isinstance(error, (AttributeError, KeyError)):  # ml_collections: no such config field
        if "get_config" in str(error):
            fail(f"--config={_flag_value(argv, 'config')!r} is invalid: a config file defines "
                 f"get_config() returning a ConfigDict")
        fail(_unknown_field(argv, error))
    if isinstance(error, (TypeError, ValueError)):  # a config override of the wrong type
        fail(str(error).splitlines()[0])
    # a config file that does not run (syntax, raises)
    fail(f"--config={_flag_value(argv, 'config')!r} cannot be loaded: {error_summary(error)}")


def _flag_value(argv: list[str], name: str) -> str:
    """The value given for --name (as `--name=v` or `--name v`), '' when absent."""
    for index, argument in enumerate(argv):
        if argument.startswith(f"--{name}="):
            return argument.split("=", 1)[1]
        if argument == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return ""


def _unknown_field(argv: list[str], error: BaseException) -> str:
    text = str(error)
    suggestion = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    if suggestion:
        key, hint = suggestion.group(2), f" (did you mean {suggestion.group(1)!r}?)"
    else:
        key, hint = re.findall(r"[A-Za-z_]\w*", text)[0], ""
    return f"{_offending_argument(argv, key)} is invalid: the config has no field {key!r}{hint}"


CONFIG_HELP = (
    "The experiment config: a packaged config by name ({names}), or a path to a config file "
    "(a Python file whose get_config() returns a ConfigDict). ':arg' passes arg to get_config, "
    "e.g. digits:quick. A relative configs/<name>.py that does not exist in the current "
    "directory means the packaged config <name>, so configs/toy2d.py works from any directory.")


def resolve_config(value: str) -> str:
    """The file (and `:arg`) that `--config=value` names, or ConfigError naming the packaged
    configs. `value` is `target[:arg]`; the target is, in this order: an existing file; the name
    of a packaged config (`toy2d`); or a relative `configs/<name>.py` that does not exist here,
    which names the packaged config `<name>` (the repository's layout before the configs moved
    into the package, so documented commands work from any directory)."""
    from jaxdiff import configs
    from jaxdiff.errors import ConfigError

    target, colon, argument = value.partition(":")
    names = configs.config_names()
    directory, file_name = os.path.split(os.path.normpath(target)) if target else ("", "")
    if os.path.isfile(target):
        path = target
    elif target in names:
        path = configs.config_path(target)
    elif (not os.path.isabs(target) and directory == "configs" and file_name.endswith(".py")
          and file_name[:-3] in names):
        path = configs.config_path(file_name[:-3])
    elif re.fullmatch(r"\w+", target):
        raise ConfigError(f"--config={value!r} is invalid: no packaged config {target!r} (one "
                          f"of {', '.join(names)}) and no such file")
    else:
        problem = "a directory, not a config file" if os.path.isdir(target) else "no such file"
        raise ConfigError(f"--config={value!r} is invalid: {problem} (packaged configs, by "
                          f"name: {', '.join(names)})")
    return path + colon + argument


class _ResolvingParser(flags.ArgumentParser):
    """ml_collections' config-file parser, given the file that `resolve_config` finds."""

    def __init__(self, parser: flags.ArgumentParser):
        self._parser = parser

    def parse(self, argument):
        return self._parser.parse(resolve_config(argument))

    def flag_type(self) -> str:
        return self._parser.flag_type()


def define_config(default: str):
    """`config_flags.DEFINE_config_file("config", default, lock_config=True)` whose value is a
    packaged config's name or a file (`resolve_config`). ml_collections resolves
    `--config.a.b=value` overrides against the config while defining the flag, so a misspelt
    field fails here, before absl's parser runs: reported in one line, exit code 2."""
    from jaxdiff import configs
    from ml_collections import config_flags

    try:
        holder = config_flags.DEFINE_config_file(
            "config", resolve_config(default),
            CONFIG_HELP.format(names=", ".join(configs.config_names())), lock_config=True)
    except Exception as error:  # noqa: BLE001 - every failure is reported in one line
        _fail_parsing(sys.argv, error)
    flag = flags.FLAGS[holder.name]
    flag.parser = _ResolvingParser(flag.parser)
    flag.default_as_str = repr(default)  # --help shows the name, not the installed path
    return holder


def load_config(config_flag):
    """The parsed config of `define_config`'s flag; a file that cannot be loaded (missing,
    raising, unknown `:argument`) is a one-line error naming it."""
    try:
        config = config_flag.value
        config.to_dict()  # a file that failed to load gives a placeholder that raises here
        return config
    except (OSError, ValueError, TypeError, AttributeError, SyntaxError) as error:
        missing = re.search(r"No such file or directory: '([^']+)'", str(error))
        fail(f"--config={missing.group(1)!r} is invalid: no such file" if missing
             else f"--config cannot be loaded: {error}")


def check_writable(name: str, path: str, *, directory: bool) -> None:
    """ConfigError naming the flag unless `path` is usable: a directory to write in (`directory`)
    or a file to write, creatable where it does not exist yet."""
    from jaxdiff.errors import ConfigError

    if not path:
        raise ConfigError(f"--{name}={path!r} is invalid: an empty path")
    path = os.path.abspath(path)
    kind = "directory" if directory else "file"
    if os.path.exists(path) and os.path.isdir(path) != directory:
        other = "file" if directory else "directory"
        raise ConfigError(f"--{name}={path!r} is invalid: it is a {other}, not a {kind}")
    existing = path if directory and os.path.isdir(path) else os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"--{name}={path!r} is invalid: {existing!r} is a file, so the {kind} "
                          f"cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--{name}={path!r} is invalid: {existing!r} is not writable")


def quiet_failed_read_leftovers() -> None:
    """Keep one-line errors one line after Orbax fails to read a damaged checkpoint: its
    background reads can still post to the event loop the failed restore closed, which Python
    reports as an unraisable "Event loop is closed" RuntimeError with a traceback (and asyncio
    logs "Future exception was never retrieved"). The read failure itself is reported by jaxdiff
    (a warning naming the checkpoint, or the error line), so these echoes are dropped; any other
    unraisable exception is printed as usual."""
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and \
                "Event loop is closed" in str(unraisable.exc_value):
            return
        default(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
