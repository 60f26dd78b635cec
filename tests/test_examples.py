"""Every example runs, and the worked example prints exactly the output in its docstring."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def docstring_output(path: pathlib.Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    block = doc.split("Output::", 1)[1]
    lines = [line[4:] if line.startswith("    ") else line for line in block.splitlines()]
    return "\n".join(lines).strip()


def test_worked_example_prints_its_docstring():
    path = ROOT / "examples" / "worked_example.py"
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert out.strip() == docstring_output(path)
    # the guide's numbers (§11) appear as printed in the guide
    for number in ("= 2", "0.8808", "-0.1192", "0.105", "-0.0125", "-0.025"):
        assert number in out


def test_batchnorm_by_hand_prints_its_docstring():
    path = ROOT / "examples" / "batchnorm_by_hand.py"
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert out.strip() == docstring_output(path)
    # the three paths sum to the compact formula, and the kernels agree
    assert "agree to 1e-12: True" in out
    assert "dx = [0.042263, -0.158379, 0.154110, -0.037994]" in out
