"""The CEL package's interactive command line is not imported to compile or evaluate rules (0.3 s of every
start), and still works when something asks for it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.catalog.rules import compile_rule
catalog = load_catalog(bundled_catalog_path())
rule, problems = compile_rule("customer.orders_count > 1")
assert rule is not None and not problems, problems
assert rule.evaluate({"customer": {"orders_count": 2}, "context": {}, "journey": {}, "trigger": "x"})
print("prompt_toolkit" in sys.modules, "rich" in sys.modules)
import cel
print(callable(cel.cli.main), "prompt_toolkit" in sys.modules)
"""


def test_rules_compile_and_run_without_the_cel_command_line_which_still_loads_on_use() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "True"]
