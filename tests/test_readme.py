import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands():
    lines = [line.strip() for line in README.read_text().splitlines()[:2]]
    assert lines[0].startswith("make verify") and lines[1].startswith("make test")


def test_readme_python_example_runs(capsys):
    text = README.read_text()
    block = re.search(r"<!-- readme-example -->\n```python\n(.*?)```", text, re.S).group(1)
    exec(compile(block, "README example", "exec"), {})
    out = capsys.readouterr().out
    inner = float(re.search(r"<g_w, g_l> = (-?[\d.]+)", out).group(1))
    cosine = float(re.search(r"cosine = (-?[\d.]+)", out).group(1))
    assert -1.0 <= cosine <= 1.0 and inner != 0.0
