"""The committed generated code is exactly what `make protos` produces."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    protos = sorted((ROOT / "protos" / "nextbest" / "api" / "v1").glob("*.proto"))
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    (tmp_path / "out").mkdir()
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-Iprotos",
        # google/rpc/status.proto (NextActionBatch's per-item status) from googleapis-common-protos, as
        # `make protos` finds it.
        f"-I{sysconfig.get_paths()['purelib']}",
        "--python_out=out",
        "--pyi_out=out",
        "--grpc_python_out=out",
        *[str(p.relative_to(ROOT)) for p in protos],
    ]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    generated = tmp_path / "out" / "nextbest" / "api" / "v1"
    committed = ROOT / "src" / "nextbest" / "api" / "v1"
    names = sorted(p.name for p in generated.iterdir())
    assert names, "protoc produced nothing"
    for name in names:
        assert (committed / name).exists(), f"{name} is not committed; run `make protos`"
        assert filecmp.cmp(generated / name, committed / name, shallow=False), (
            f"{name} is stale; run `make protos`"
        )
