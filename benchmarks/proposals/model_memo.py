"""Proposal for kvnand/workload/model.py: compute a model's parameter count and matrix lists once.

`ModelSpec.params` (through `weight_bytes`, used by the capacity check of every point) rebuilds the
`Matrix` lists on every call; `matrices()` is also rebuilt by every prefill program. ModelSpec is frozen, so
functools.cached_property (which writes the instance __dict__) works:

    from functools import cached_property

    @cached_property
    def _matrices(self) -> tuple[Matrix, ...]:          # the body of today's matrices(), as a tuple
        ...
    def matrices(self) -> list[Matrix]:
        return list(self._matrices)

    @cached_property        # instead of @property
    def params(self) -> int: ...
    @cached_property
    def active_params(self) -> int: ...

`install()` applies this to the live class for measuring (python -m benchmarks.proposals.model_memo).
"""

from __future__ import annotations

from functools import cached_property


def install() -> None:
    from kvnand.workload.model import ModelSpec

    matrices = ModelSpec.matrices
    params = ModelSpec.params.fget
    active = ModelSpec.active_params.fget

    def _matrices(self):
        return tuple(matrices(self))

    ModelSpec._matrices = cached_property(_matrices)
    ModelSpec._matrices.__set_name__(ModelSpec, "_matrices")
    ModelSpec.matrices = lambda self: list(self._matrices)
    for name, fn in (("params", params), ("active_params", active)):
        cp = cached_property(fn)
        cp.__set_name__(ModelSpec, name)
        setattr(ModelSpec, name, cp)


def main() -> None:
    import time

    import kvnand
    from benchmarks.proposals import builder_memo

    def med(n=300):
        kvnand.evaluate("kvnand-d", "llama3.1-70b", 1000)
        ts = []
        for i in range(n):
            t0 = time.perf_counter()
            kvnand.evaluate("kvnand-d", "llama3.1-70b", 1000 + 37 * i)
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[n // 2] * 1e3

    a = med()
    install()
    b = med()
    builder_memo.install()
    c = med()
    print(f"evaluate kvnand-d 70B (median ms, varying context): as is {a:.3f}; + model memo {b:.3f}; "
          f"+ builder memo {c:.3f}")


if __name__ == "__main__":
    main()
