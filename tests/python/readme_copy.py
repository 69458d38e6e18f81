"""readme_copy.py README EXAMPLE: fails unless README.md shows EXAMPLE whole, as the fenced block
that follows the line `<!-- examples/torch/attention.py -->` (so the Python example the README
shows is the one the python_readme_example test runs)."""
import sys

readme, example = sys.argv[1], sys.argv[2]
marker = "<!-- examples/torch/attention.py -->"
text = open(readme, encoding="utf-8").read()
if marker not in text:
    sys.exit(f"{readme}: no '{marker}' line before the Python example")
block = text.split(marker, 1)[1].lstrip("\n")
if not block.startswith("```python\n"):
    sys.exit(f"{readme}: the line after '{marker}' must open a ```python block")
shown = block[len("```python\n"):].split("\n```", 1)[0] + "\n"
if shown != open(example, encoding="utf-8").read():
    sys.exit(f"{readme}: its Python example differs from {example}: copy the file into the README again")
print(f"{readme} shows {example} unchanged")
