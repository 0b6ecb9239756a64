"""docs/architecture.md lists every module of the package (a `<name>.py` row names the files
of a folder that share one role, such as the methods)."""
import re

from conftest import REPO


def test_every_module_is_listed():
  doc = (REPO / "docs/architecture.md").read_text()
  grouped = {}  # folder -> names on its `<name>.py` row and the row's continuation lines
  for match in re.finditer(r"^(clipjax/[\w/]+)/<name>\.py(.*(?:\n {20,}.*)*)", doc, re.M):
    grouped[match.group(1)] = set(re.findall(r"\w+", match.group(2)))
  missing = []
  for path in sorted((REPO / "clipjax").rglob("*.py")):
    module = str(path.relative_to(REPO))
    if path.name == "__init__.py" or module in doc:
      continue
    if path.stem not in grouped.get(str(path.parent.relative_to(REPO)), set()):
      missing.append(module)
  assert not missing, f"docs/architecture.md does not list {missing}"
