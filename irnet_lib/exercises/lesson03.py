"""Notebook 03 · Conditional convolution: its exercises."""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from .core import CodeExercise, Exercise, compare, meta_irnet, params, try_student_code


def _conditional_1x1_params() -> int:
    from ..condconv import CondConv2d
    return params(CondConv2d(160, 640, kernel_size=1, num_experts=4))


def _mixing_macs(num_experts: int) -> int:
    from ..complexity import count
    layers = count(meta_irnet("condconv", num_experts=num_experts))
    return int(layers.loc[layers["component"] == "mixing", "macs"].sum())


def _routing_difference(num_experts: int) -> int:
    per_conv = meta_irnet("condconv", num_experts=num_experts)
    return params(per_conv) - params(meta_irnet("condconv", num_experts=num_experts, routing="block"))


# ------------------------------------------------------- Exercise 4: CondConv for a batch, written by the student

#: (name, C_in, C_out, groups, F): a depthwise conv and a 1x1 conv, the two kinds of Figure 4
CASES = [("depthwise 3x3", 8, 8, 8, 3), ("1x1", 6, 10, 1, 1)]
STRIDES, BATCHES, EXPERTS = (1, 2), (1, 3, 5), 3


class _CountConvs(TorchFunctionMode):
    """Counts the calls of conv2d made inside it (F.conv2d, torch.conv2d, an nn.Conv2d)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.conv2d:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _hint_for_error(error: str) -> str:
    if "channels" in error or "groups" in error:
        return (" Hint: the folded input has B * C_in channels; the one grouped conv needs B * C_out kernels "
                "and groups = B * groups, so that example b meets only its own kernel.")
    return ""


def _check_case(fn, kind, c_in, c_out, groups, k, stride, batch) -> tuple[str | None, int]:
    """(what is wrong or None, conv2d calls) for one case, against the per-example definition."""
    from ..condconv import condconv2d_reference
    torch.manual_seed(3)
    x = torch.randn(batch, c_in, 9, 9)
    weight = torch.randn(EXPERTS, c_out, c_in // groups, k, k)
    routing = torch.rand(batch, EXPERTS)
    where = f"{kind}, stride {stride}, batch {batch}"
    counter = _CountConvs()
    with torch.no_grad(), counter:
        y, error = try_student_code(f"{getattr(fn, '__name__', 'your function')}({where})", fn,
                                    x.clone(), weight.clone(), routing.clone(), stride, k // 2, groups)
    if error:
        return error + _hint_for_error(error), counter.calls
    with torch.no_grad():
        expected = condconv2d_reference(x, weight, routing, stride, k // 2, groups)
    problem = compare(f"for a {where} it", y, expected, atol=1e-4)
    if problem and y.shape != expected.shape:
        problem += (" (unfold the output: (1, B * C_out, H', W') -> (B, C_out, H', W'); the stride and "
                    "padding go to the one conv)")
    return problem, counter.calls


def check_condconv2d(fn) -> tuple[bool, str]:
    """Notebook 03: the student's batched CondConv against the per-example definition, condconv2d_reference."""
    for kind, c_in, c_out, groups, k in CASES:
        for stride in STRIDES:
            right_for_one = False
            for batch in BATCHES:
                problem, calls = _check_case(fn, kind, c_in, c_out, groups, k, stride, batch)
                if problem and right_for_one and "computes something else" in problem:
                    problem += (": right for one example, wrong for a batch, so examples meet other examples' "
                                "kernels. The fold puts example 0's channels first, then example 1's, ...: stack "
                                "the B mixed kernels in that same order, and fold with reshape, not a transpose")
                elif problem and "computes something else" in problem:
                    problem += (". Check the mixing: one kernel per example, sum_m r[b, m] W_m, i.e. "
                                "routing_weights @ weight.reshape(M, -1)")
                if problem:
                    return False, problem
                if batch > 1 and calls != 1:
                    return False, (f"right numbers for a {kind} conv, stride {stride}, batch {batch}, but with "
                                   f"{calls} calls of conv2d: fold the batch into the groups so that ONE grouped "
                                   "convolution computes the whole batch")
                right_for_one = True
    return True, ("your function is CondConv for a batch: one grouped convolution gives the per-example definition's "
                  "outputs (depthwise 3x3 and 1x1, strides 1 and 2, batches of 1, 3 and 5).")


EXERCISES = {
    "03.1": Exercise(_conditional_1x1_params,
                     hint="M expert kernels of C_out x C_in x 1 x 1 weights (no bias), plus the routing: "
                          "Linear(C_in, M) with a bias."),
    "03.2": Exercise(lambda: _mixing_macs(8),
                     hint="mixing is M multiply-adds per weight of the mixed kernel, once per image: M times the "
                          "weights of ONE kernel of each of the 48 conditional convs; M = 8 this time."),
    "03.3": Exercise(lambda: _routing_difference(8),
                     hint="both have the routing linear on the block input; per-conv routing adds two on the Ne "
                          "expanded channels in every block, each Linear(Ne, M) with a bias; M = 8 this time."),
    "03.4": CodeExercise(check_condconv2d),
}
