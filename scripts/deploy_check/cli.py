"""What the tradestream binary accepts, read from the binary itself.

Deployment files name subcommands, flags and environment variables; they rot silently when the
CLI changes. Instead of a hand-kept list, this module asks the freshly built binary: it walks
`--help` of every subcommand (clap prints each flag with its `[env: NAME=]`), and checks a
container's arguments by running them with `--help` appended, which makes clap parse every
argument and flag value (a bad subcommand, flag or value exits 2) without starting anything.
Environment values are checked the same way, by passing them as the flag they stand for.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field

# Subcommands other engineers are adding. While the binary lacks one, checks of the services
# that use it are reported as PENDING (not failures). DEPLOY_CHECK_STRICT=1 makes them failures.
PENDING_SUBCOMMANDS: dict[str, str] = {}

FLAG_RE = re.compile(r"^\s{2,}(?:-\w, )?(--[a-z0-9][a-z0-9-]*)(?: <([A-Z0-9_]+)>)?")
ENV_RE = re.compile(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)(?:=[^\]]*)?\]")


def clean_env() -> dict[str, str]:
    """No inherited settings: RUST_LOG or KAFKA_BROKERS in the caller's shell must not change
    what the help shows or parses."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}


@dataclass
class Flag:
    name: str
    takes_value: bool
    env: str | None = None


@dataclass
class Command:
    path: tuple[str, ...]
    subcommands: list[str] = field(default_factory=list)
    flags: dict[str, Flag] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, Flag]:
        return {f.env: f for f in self.flags.values() if f.env}


class Cli:
    """The command tree of one tradestream binary."""

    def __init__(self, binary: str):
        self.binary = binary
        self.commands: dict[tuple[str, ...], Command] = {}
        self._walk(())

    def run(self, args: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.binary, *args],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _walk(self, path: tuple[str, ...]) -> None:
        out = self.run([*path, "--help"])
        if out.returncode != 0:
            raise RuntimeError(f"{self.binary} {' '.join(path)} --help failed: {out.stderr.strip()}")
        cmd = Command(path)
        section = None
        last: Flag | None = None
        for line in out.stdout.splitlines():
            if line and not line.startswith(" "):
                section = line.rstrip(":")
                continue
            if section == "Commands":
                m = re.match(r"^  ([a-z][a-z0-9-]*)(\s|$)", line)
                if m and m.group(1) != "help":
                    cmd.subcommands.append(m.group(1))
            elif section == "Options":
                m = FLAG_RE.match(line)
                if m:
                    last = Flag(m.group(1), m.group(2) is not None)
                    cmd.flags[last.name] = last
                    continue
                e = ENV_RE.search(line)
                if e and last is not None:
                    last.env = e.group(1)
        self.commands[path] = cmd
        for sub in cmd.subcommands:
            self._walk((*path, sub))

    def all_env(self) -> set[str]:
        return {name for c in self.commands.values() for name in c.env}

    def resolve(self, args: list[str]) -> tuple[tuple[str, ...], str | None]:
        """The subcommand path `args` select, and the first word that is not a subcommand where
        one is required (None when the path is complete)."""
        path: tuple[str, ...] = ()
        for word in args:
            if word.startswith("-"):
                break
            cmd = self.commands[path]
            if word in cmd.subcommands:
                path = (*path, word)
            elif cmd.subcommands:
                return path, word
            else:
                break
        if self.commands[path].subcommands:
            return path, ""
        return path, None


@dataclass
class Finding:
    level: str  # "ok", "fail", "pending", "note"
    where: str
    message: str


def check_container(cli: Cli, where: str, args: list[str], env: dict[str, str | None]) -> list[Finding]:
    """Checks one container: `args` (after the image's entrypoint `tradestream`) and its
    environment (`None` values come from Secrets and are checked by name only)."""
    strict = os.environ.get("DEPLOY_CHECK_STRICT") == "1"
    path, missing = cli.resolve(args)
    if missing is not None:
        if missing == "":
            return [Finding("fail", where, f"`tradestream {' '.join(args)}` names no subcommand of `{' '.join(path)}`")]
        if not path and missing in PENDING_SUBCOMMANDS and not strict:
            return [
                Finding(
                    "pending",
                    where,
                    f"the binary has no `{missing}` subcommand yet ({PENDING_SUBCOMMANDS[missing]}); "
                    f"its command, flags and {len(env)} environment variables are checked once it lands",
                )
            ]
        known = ", ".join(cli.commands[path].subcommands)
        return [Finding("fail", where, f"`{missing}` is not a tradestream subcommand{' of ' + ' '.join(path) if path else ''} (known: {known})")]
    cmd = cli.commands[path]
    findings: list[Finding] = []
    known_here = cmd.env
    known_anywhere = cli.all_env()
    as_flags: list[str] = []
    for name, value in sorted(env.items()):
        if name in known_here:
            flag = known_here[name]
            if value is None:
                continue
            if flag.takes_value:
                as_flags += [flag.name, value]
            elif value.lower() in ("1", "true", "yes", "on"):
                as_flags.append(flag.name)
        elif name in known_anywhere:
            findings.append(Finding("note", where, f"{name} is not read by `tradestream {' '.join(path)}` (harmless, shared settings)"))
        else:
            findings.append(Finding("fail", where, f"environment variable {name} is unknown to the binary"))
    out = cli.run([*args, *as_flags, "--help"])
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()[0] if out.stderr.strip() else f"exit {out.returncode}"
        findings.append(Finding("fail", where, f"`tradestream {' '.join(args)}` with its environment does not parse: {err}"))
    else:
        findings.append(
            Finding(
                "ok",
                where,
                f"`tradestream {' '.join(args)}` parses with its {len(env)} environment variables "
                f"({sum(1 for v in env.values() if v is None)} from Secrets, checked by name)",
            )
        )
    return findings


def check_pipeline_config(cli: Cli, where: str, toml_text: str, workdir: str) -> Finding:
    """Loads a pipeline TOML the way `run` does. `run features` reads the file right after
    parsing its flags and before connecting anywhere: a config error exits at once naming
    TRADESTREAM_CONFIG; a good config gets as far as connecting to the closed port given, and
    is stopped after a few seconds."""
    path = os.path.join(workdir, re.sub(r"[^A-Za-z0-9]+", "_", where) + ".toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(toml_text)
    argv = [
        cli.binary, "run", "features", "--config", path,
        "--kafka-brokers", "127.0.0.1:9", "--schema-registry-url", "http://127.0.0.1:9",
        "--metrics-listen", "127.0.0.1:0",
    ]
    proc = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Finding("ok", where, "pipeline TOML accepted by the binary")
    if "TRADESTREAM_CONFIG" in err:
        return Finding("fail", where, "pipeline TOML refused: " + " ".join(err.strip().splitlines()[-6:]))
    return Finding("ok", where, "pipeline TOML accepted by the binary (exited later: " + (err.strip().splitlines() or ["?"])[-1][:120] + ")")
