"""The command line as a tree of commands, read from the argparse parser that
`loadstone` itself runs, so that the man page and the shell completions
(loadstone.manpages, loadstone.completion) cannot drift from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass
class Option:
    flags: list[str]  # ["-c", "--config"]
    help: str
    metavar: str | None  # None: a flag that takes no value
    choices: list[str] | None


@dataclass
class Positional:
    name: str
    help: str
    choices: list[str] | None
    many: bool  # nargs "+" or "*"
    optional: bool  # nargs "?" or "*"


@dataclass
class Command:
    path: list[str]  # ["ctl", "drain-node"]; [] for loadstone itself
    help: str
    usage: str
    options: list[Option] = field(default_factory=list)
    positionals: list[Positional] = field(default_factory=list)
    subcommands: list[Command] = field(default_factory=list)

    def walk(self) -> list[Command]:
        """This command and every one below it, depth first, in parser order."""
        out = [self]
        for sub in self.subcommands:
            out.extend(sub.walk())
        return out


def _choices(action: argparse.Action) -> list[str] | None:
    return [str(c) for c in action.choices] if action.choices is not None else None


def command_tree(
    parser: argparse.ArgumentParser, path: list[str] | None = None, help: str = ""
) -> Command:
    path = path or []
    usage = " ".join(parser.format_usage().split())[len("usage: ") :]
    command = Command(path, help or (parser.description or ""), usage)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                command.subcommands.append(command_tree(sub, [*path, name], helps.get(name, "")))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            takes_value = action.nargs != 0
            metavar = None
            if takes_value:
                metavar = str(action.metavar or action.dest.upper())
            help_text = (action.help or "").replace("%(default)s", str(action.default))
            if isinstance(action, argparse._VersionAction):
                help_text = "print the version and exit"
            command.options.append(
                Option(list(action.option_strings), help_text, metavar, _choices(action))
            )
        else:
            command.positionals.append(
                Positional(
                    str(action.metavar or action.dest),
                    action.help or "",
                    _choices(action),
                    action.nargs in ("+", "*"),
                    action.nargs in ("?", "*"),
                )
            )
    return command
