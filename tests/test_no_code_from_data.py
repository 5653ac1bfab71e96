"""No code from data (SPEC §9): the runtime's sources never turn bytes from a socket, a model file
or a config into code. An AST scan of engine/, plugins/ and exporters/ for the calls that could:
pickle-like modules, eval/exec/compile, unsafe YAML loading, ``np.load(allow_pickle=True)``,
``torch.load`` (outside the exporters, and there only with ``weights_only=True``), a shell, and
imports of names that are not written in the source. The scanner is itself tested on planted code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("engine", "plugins", "exporters")
PICKLE_LIKE = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib", "jsonpickle"}
CODE_BUILTINS = {"eval", "exec", "compile", "__import__"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "Loader", "UnsafeLoader",
               "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("os", "execl"), ("os", "execlp")}

# (file, function, rule): why the call is safe. Each entry must still match something (no stale ones).
ALLOWED = {
    ("engine/cli_common.py", "get_command", "dynamic-import"):
        "the module names come from the COMMANDS / EVAL_TASKS tables written in engine/cli.py",
    ("engine/sinks/__init__.py", "_load", "dynamic-import"):
        "the module names come from the SINK_KINDS table written in that module",
    ("exporters/cli.py", "_load_factory", "dynamic-import"):
        "`avstream export --module pkg.mod:factory`: code the user names on their own command line",
    ("exporters/cli.py", "_export_recipe", "dynamic-import"):
        "the recipe name is a click.Choice of the built-in RECIPES",
    ("exporters/cpu_features.py", "runtime_flags", "dynamic-import"):
        "the module names are a literal tuple (numpy's own CPU-feature module, numpy 1 and 2)",
    ("exporters/eval_tasks.py", "random_weights_model", "dynamic-import"):
        "a module inside avstream.exporters.recipes named by the built-in eval task",
}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    function: str
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: in {self.function}(): {self.rule}: {self.text}"


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class Scanner(ast.NodeVisitor):
    def __init__(self, file: str, source: str, in_exporters: bool):
        self.file, self.source, self.in_exporters = file, source, in_exporters
        self.findings: list[Finding] = []
        self.stack: list[str] = ["<module>"]

    def flag(self, node: ast.AST, rule: str) -> None:
        text = ast.get_source_segment(self.source, node) or rule
        self.findings.append(Finding(self.file, getattr(node, "lineno", 0), self.stack[-1], rule, text[:100]))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in PICKLE_LIKE:
                self.flag(node, "pickle-like-import")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").split(".")[0] in PICKLE_LIKE:
            self.flag(node, "pickle-like-import")
        if node.module == "yaml" and any(a.name in UNSAFE_YAML for a in node.names):
            self.flag(node, "unsafe-yaml")
        if node.module == "builtins" and any(a.name in CODE_BUILTINS for a in node.names):
            self.flag(node, "eval-exec")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _dotted(node.value) == "yaml" and node.attr in UNSAFE_YAML:
            self.flag(node, "unsafe-yaml")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if isinstance(node.func, ast.Name) and node.func.id in CODE_BUILTINS:
            if node.func.id != "__import__" or not all(isinstance(a, ast.Constant) for a in node.args[:1]):
                self.flag(node, "eval-exec")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                self.flag(node, "unsafe-yaml")
        elif name in ("np.load", "numpy.load") and not (_keyword(node, "allow_pickle") is None
                                                        or _is_const(_keyword(node, "allow_pickle"), False)):
            self.flag(node, "numpy-allow-pickle")
        elif name.endswith("read_pickle") or name in ("torch.jit.load",):
            self.flag(node, "pickle-like-import")
        elif name == "torch.load":
            if not self.in_exporters:
                self.flag(node, "torch-load-in-runtime")
            elif not _is_const(_keyword(node, "weights_only"), True):
                self.flag(node, "torch-load-unsafe")
        elif last in ("import_module", "__import__") and name in ("importlib.import_module", "import_module",
                                                                  "__import__"):
            if not (node.args and isinstance(node.args[0], ast.Constant)):
                self.flag(node, "dynamic-import")
        if tuple(name.split(".")[-2:]) in SHELL_CALLS:
            self.flag(node, "shell")
        if _is_const(_keyword(node, "shell"), True) or (
                _keyword(node, "shell") is not None and not _is_const(_keyword(node, "shell"), False)):
            self.flag(node, "shell")
        self.generic_visit(node)


def scan_source(source: str, file: str = "<snippet>", in_exporters: bool = False) -> list[Finding]:
    scanner = Scanner(file, source, in_exporters)
    scanner.visit(ast.parse(source, file))
    return scanner.findings


def scan_tree() -> list[Finding]:
    findings: list[Finding] = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            findings += scan_source(path.read_text(encoding="utf-8"), rel, in_exporters=top == "exporters")
    return findings


def test_runtime_sources_turn_no_data_into_code() -> None:
    findings = scan_tree()
    unexplained = [f for f in findings if (f.file, f.function, f.rule) not in ALLOWED]
    assert not unexplained, "code from data:\n" + "\n".join(map(str, unexplained))
    used = {(f.file, f.function, f.rule) for f in findings}
    assert not set(ALLOWED) - used, f"stale allowlist entries: {sorted(set(ALLOWED) - used)}"


PLANTED = {
    "import pickle\npickle.loads(b'')": "pickle-like-import",
    "from marshal import loads": "pickle-like-import",
    "import dill": "pickle-like-import",
    "import pandas as pd\npd.read_pickle(p)": "pickle-like-import",
    "eval(msg['expr'])": "eval-exec",
    "def f(code):\n    exec(code)": "eval-exec",
    "compile(src, 'x', 'exec')": "eval-exec",
    "__import__(header['module'])": "eval-exec",
    "import yaml\nyaml.load(text)": "unsafe-yaml",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)": "unsafe-yaml",
    "import yaml\nyaml.unsafe_load(text)": "unsafe-yaml",
    "import yaml\nyaml.full_load(text)": "unsafe-yaml",
    "from yaml import UnsafeLoader": "unsafe-yaml",
    "import numpy as np\nnp.load(f, allow_pickle=True)": "numpy-allow-pickle",
    "import numpy as np\nnp.load(f, allow_pickle=flag)": "numpy-allow-pickle",
    "import torch\ntorch.load(path)": "torch-load-in-runtime",
    "import subprocess\nsubprocess.run(cmd, shell=True)": "shell",
    "import os\nos.system(cmd)": "shell",
    "import importlib\nimportlib.import_module(msg['plugin'])": "dynamic-import",
}


@pytest.mark.parametrize("snippet, rule", PLANTED.items(), ids=list(PLANTED.values()))
def test_the_scanner_catches_planted_code(snippet: str, rule: str) -> None:
    assert rule in {f.rule for f in scan_source(snippet)}, snippet


def test_the_scanner_catches_unsafe_torch_load_in_exporters() -> None:
    assert [f.rule for f in scan_source("torch.load(p, weights_only=False)", in_exporters=True)] == ["torch-load-unsafe"]
    assert scan_source("torch.load(p, map_location='cpu', weights_only=True)", in_exporters=True) == []


def test_the_scanner_leaves_safe_code_alone() -> None:
    safe = "\n".join([
        "import yaml, json, ast, importlib, subprocess",
        "model.eval()",
        "yaml.safe_load(text)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "yaml.SafeLoader(text)",
        "json.loads(raw)",
        "ast.literal_eval(s)",
        "np.load(f)",
        "np.load(f, allow_pickle=False)",
        "importlib.import_module('avstream.engine.cli')",
        "subprocess.run(['ffmpeg', '-i', path], shell=False)",
    ])
    assert scan_source(safe) == []
