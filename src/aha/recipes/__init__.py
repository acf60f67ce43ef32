"""The YAML recipes shipped inside the package, found by name: `aha train grpo`, `aha pipeline r1`.

The recipes live here, next to this file, so they ship in the wheel (pyproject's package-data) and resolve from
any folder; a clone's top-level `configs/` is a link to this directory, so `aha train configs/grpo.yaml` keeps
working there (and resolves by name where the link or the folder is missing, e.g. after `pip install`).

A recipe's leading comment lines carry what `aha recipes` lists, one source of truth per recipe:

    # One-line description.
    # run: aha train grpo                        the command that runs it (its command: `train`)
    # needs: KEY <- COMMAND                      zero or more: a file the recipe reads at KEY, made by COMMAND

`needs` is checked on load: when KEY still holds the recipe's own value and that file does not exist, the
command stops with one line naming the command to run first (or the key to point elsewhere).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


@dataclass
class Recipe:
    name: str
    path: Path
    description: str = ""
    run: str = ""  # the command line that runs it, e.g. "aha train grpo"
    needs: list[tuple[str, str]] = field(
        default_factory=list
    )  # (dotted key, command that makes it)

    @property
    def config_arg(self) -> str:
        """The run line's CONFIG argument (`aha train grpo ...` -> grpo; a pipeline's after its name, or the
        pipeline's name when the line has none: `aha pipeline r1-zero` runs the recipe r1-zero)."""
        words = self.run.split()
        if self.command == "pipeline" and len(words) > 2:
            return words[3] if len(words) > 3 and "=" not in words[3] else words[2]
        return words[2] if len(words) > 2 else ""

    @property
    def command(self) -> str:
        """The aha command the recipe is for ("train", "pipeline", ...), from its run line."""
        words = self.run.split()
        return words[1] if len(words) > 1 and words[0] == "aha" else ""


def read_header(path: Path) -> Recipe:
    """The leading comment block of a YAML file -> Recipe (description, run line, needs)."""
    r = Recipe(name=path.stem, path=path)
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("run:"):
            r.run = text[len("run:") :].strip()
        elif text.startswith("needs:"):
            key, _, command = text[len("needs:") :].partition("<-")
            r.needs.append((key.strip(), command.strip()))
        elif not r.description:
            r.description = text
    return r


def recipes() -> dict[str, Recipe]:
    """Every shipped recipe by name, sorted."""
    return {p.stem: read_header(p) for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def names_for(command: str) -> list[str]:
    """The recipes whose run line is `aha COMMAND ...`."""
    return [n for n, r in recipes().items() if r.command == command]


def resolve(arg: str | Path, command: str | None = None) -> Path:
    """A config argument -> the YAML file: an existing path, else a recipe name (`grpo`, `grpo.yaml`,
    `configs/grpo.yaml`, `r1-zero`; with a command, `r1` for `aha pipeline` finds pipeline_r1, `student` for `aha
    pretrain` pretrain_student). Anything else is a ConfigError listing the recipes (of `command`, if given)."""
    p = Path(arg)
    if p.is_file():
        return p
    shipped = recipes()
    if str(p.parent) in (".", "configs", "recipes") or p.parent.name in ("configs", "recipes"):
        given = p.name[: -len(p.suffix)] if p.suffix in SUFFIXES else p.name
        stem = given.replace("-", "_")
        # without a command: a name that one recipe ends with (`r1-zero` -> pipeline_r1_zero)
        tail = [n for n in shipped if n.endswith(f"_{stem}")]
        prefixed = f"{command}_{stem}" if command else (tail[0] if len(tail) == 1 else stem)
        for name in (given, stem, prefixed):
            if name in shipped:
                return shipped[name].path
    mine = [n for n, r in shipped.items() if command and r.command == command]
    own = mine or list(shipped)
    whose = f"for aha {command}" if mine else "shipped"
    listed = f"recipes {whose}: {', '.join(own)} (`aha recipes` lists them all)"
    if p.suffix in SUFFIXES or len(p.parts) > 1:
        raise ConfigError(
            "", f"config file '{arg}' not found; pass a YAML file or a recipe name ({listed})"
        )
    close = difflib.get_close_matches(p.stem, own, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError("", f"no recipe or file named '{arg}'; {hint}{listed}")


def _lookup(node, key: str):
    """The value at dotted `key` in nested dicts / dataclasses; KeyError when a part is missing."""
    for part in key.split("."):
        if isinstance(node, dict):
            node = node[part]
        elif hasattr(node, part):
            node = getattr(node, part)
        else:
            raise KeyError(key)
    return node


def check_needs(path: Path, data: dict, cfg) -> None:
    """A `needs:` file the config still points at (its value unchanged from the YAML) must exist."""
    for key, command in read_header(Path(path)).needs:
        try:
            ours, used = _lookup(data, key), _lookup(cfg, key)
        except KeyError:
            continue
        if ours != used:
            continue  # the user pointed the key elsewhere: the command's own checks apply
        paths = used if isinstance(used, (list, tuple)) else [used]
        missing = [str(v) for v in paths if isinstance(v, str) and not Path(v).exists()]
        if missing:
            raise ConfigError(
                key,
                f"'{missing[0]}' does not exist yet; make it first: {command} "
                f"(or set {key}=... to your own)",
            )


def listing() -> str:
    """What `aha recipes` prints: name, command line, description, what to run first."""
    rows = []
    for r in recipes().values():
        rows += [f"  {r.run}", f"      {r.description}"]
        rows += [f"      first: {cmd}  (it makes {key})" for key, cmd in r.needs]
    return "\n".join(
        [
            "recipes (run one as shown, key.sub=value overrides after it; `aha recipes NAME > my.yaml`",
            "writes a copy to edit, then `aha <command> my.yaml`):",
            *rows,
        ]
    )


def cmd_recipes(args: list[str]) -> int:
    """`aha recipes` lists them; `aha recipes NAME` prints one (to copy and edit)."""
    import sys

    from ..cli_args import UsageError

    if not args:
        print(listing(), flush=True)
        return 0
    shipped = recipes()
    name = args[0][: -len(".yaml")] if args[0].endswith(".yaml") else args[0]
    # the file's name, or the CONFIG word of its run line as the listing shows it (`aha pipeline r1-zero
    # r1-zero` -> `aha recipes r1-zero`)
    by_arg = {r.config_arg: r for r in shipped.values() if r.config_arg}
    recipe = shipped.get(name) or by_arg.get(name)
    if len(args) > 1 or recipe is None:
        raise UsageError(f"usage: aha recipes [NAME]; recipes: {', '.join(shipped)}")
    sys.stdout.write(recipe.path.read_text())
    return 0
