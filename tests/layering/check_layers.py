#!/usr/bin/env python3
"""The layering rule of dring (docs/architecture.md), checked on the source tree.

Every #include "dring/..." in a layer's files must name a header of that layer or of a layer
below it:

    core      dring/core/*, dring/config.h
    kernels   core + dring/kernels/*
    comm      core + dring/comm/*
    runtime   core + kernels + comm + dring/runtime/*, dring/dring.h
    launch, bench, tests, examples: anything

Also: no file under core/, kernels/ or comm/ names mpi.h unless it is part of comm/, and no
file under core/ or kernels/ includes an MPI or NCCL header at all. Prints each violation as
FILE:LINE: message and exits 1 when there is any; prints the number of files checked otherwise.

Usage: check_layers.py [REPO_ROOT]     check the tree
       check_layers.py --self-test     check that seeded violations are found
"""
import pathlib
import re
import sys
import tempfile

CORE = ("dring/core/", "dring/config.h")
ALLOWED = {
    "core": CORE,
    "kernels": CORE + ("dring/kernels/",),
    "comm": CORE + ("dring/comm/",),
    "runtime": CORE + ("dring/kernels/", "dring/comm/", "dring/runtime/", "dring/dring.h"),
}
# System headers a layer may not include: the ground floor and the kernels know nothing of MPI
# or NCCL (DESIGN.md section 3).
FORBIDDEN_SYSTEM = {
    "core": ("mpi.h", "nccl.h", "hdf5.h"),
    "kernels": ("mpi.h", "nccl.h", "hdf5.h"),
    "comm": ("hdf5.h",),
}
SOURCE = re.compile(r"\.(c|h|cpp|hpp|cu|cuh)$")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def check(root: pathlib.Path) -> int:
    violations = []
    checked = 0
    for layer, allowed in ALLOWED.items():
        for path in sorted((root / layer).rglob("*")):
            if not path.is_file() or not SOURCE.search(path.name):
                continue
            checked += 1
            rel = path.relative_to(root)
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                header = match.group(2)
                if header.startswith("dring/") and not header.startswith(allowed):
                    violations.append(f"{rel}:{number}: layer '{layer}' includes {header}, "
                                      f"which belongs to a layer above it")
                if header in FORBIDDEN_SYSTEM.get(layer, ()):
                    violations.append(f"{rel}:{number}: layer '{layer}' includes <{header}>")
    for v in violations:
        print(v)
    if violations:
        print(f"{len(violations)} layering violation(s) in {checked} files")
        return 1
    if checked == 0:
        print(f"no source files found under {root}")
        return 1
    print(f"layering: {checked} files checked, no violation")
    return 0


def self_test() -> int:
    """A tree with one clean file and one violation of each kind: exactly the violations fail."""
    cases = {
        "kernels/ok.cpp": '#include "dring/core/error.hpp"\n#include "dring/kernels/attend.hpp"\n',
        "kernels/up.cpp": '#include "dring/runtime/backend.hpp"\n',
        "comm/up.hpp": '#include "dring/kernels/attend.hpp"\n',
        "core/mpi.cpp": "#include <mpi.h>\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for name, text in cases.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        if check(root) != 1:
            print("self-test: seeded violations were not reported")
            return 1
        for name in ("kernels/up.cpp", "comm/up.hpp", "core/mpi.cpp"):
            (root / name).unlink()
        if check(root) != 0:
            print("self-test: a clean tree was reported")
            return 1
    print("self-test: passed")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(check(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parents[2])))
