"""``python -m bench [name ...]``: run every ``bench_*`` module (or the named ones) in order."""

import importlib
import pkgutil
import sys

import bench


def main(argv):
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    wanted = [a if a.startswith("bench_") else f"bench_{a}" for a in argv]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}")
    for name in wanted or names:
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(f"bench.{name}").run()


if __name__ == "__main__":
    main(sys.argv[1:])
