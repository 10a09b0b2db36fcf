"""`make bench`: both benchmarks in one run.

The input pipeline against `ImageDataGenerator.flow_from_directory` (`bench.pipeline`), then our
training step against a plain `model.fit` (`bench.train_step`). Each prints its baseline and ours
side by side; a benchmark whose module is missing is skipped with a message.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = (
    ("bench.pipeline", "input pipeline vs. ImageDataGenerator.flow_from_directory"),
    ("bench.train_step", "training step vs. plain model.fit"),
)


def main() -> int:
    failed = 0
    for module_name, title in BENCHMARKS:
        print(f"== {title} ({module_name})", flush=True)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only a missing benchmark module is skipped; a missing dependency inside it is not.
            if error.name != module_name:
                raise
            print(f"skipped: {module_name} is not there", flush=True)
            continue
        result = module.main()
        failed += int(bool(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
