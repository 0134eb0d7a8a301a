"""Notebook 02 · Squeeze and excitation: its exercises."""
from __future__ import annotations

import torch

from .core import CodeExercise, Exercise, compare, meta_irnet, params, try_student_code


def _se_macs(input_size=(3, 56, 56), components=("se",), **knobs) -> int:
    """MACs of the SE network's parts named in ``components`` (``"se"``: its linears, ``"se_scale"``:
    the channel scaling), counted by irnet_lib.complexity on one image of ``input_size``."""
    from ..complexity import count
    by_component = count(meta_irnet("se", **knobs), input_size).groupby("component")["macs"].sum()
    return int(sum(by_component.get(c, 0) for c in components))


def _one_se_params() -> int:
    from ..blocks import se_block
    return params(se_block(160, 160, se_reduction=4).se)


# ---------------------------------------------------------------------------- Exercise 4: SE, written by the student

SIZES = [(64, 4), (96, 8)]   # (channels, reduction): the checker's two SE layers


def _usual_slips(reference, x) -> dict[str, torch.Tensor]:
    """What the usual slips compute with the reference's weights, to name the one a wrong answer makes."""
    fc1, fc2 = reference.fc1, reference.fc2
    excite = lambda z: fc2(torch.relu(fc1(z)))
    z = x.mean((2, 3))
    per_channel = lambda s: x * s[:, :, None, None]
    return {
        "a softmax over the channels instead of a sigmoid": per_channel(torch.softmax(excite(z), dim=1)),
        "scaling by the pre-activation (the sigmoid is missing)": per_channel(excite(z)),
        "no ReLU between the two linears": per_channel(torch.sigmoid(fc2(fc1(z)))),
        "max pooling instead of the average": per_channel(torch.sigmoid(excite(x.amax((2, 3))))),
        "the sum over H and W instead of the mean": per_channel(torch.sigmoid(excite(x.sum((2, 3))))),
    }


def _expected_fields(channels: int, reduction: int) -> str:
    hidden = channels // reduction
    return (f"the fields must be SqueezeExcite's: fc1 = nn.Linear({channels}, {hidden}) and fc2 = "
            f"nn.Linear({hidden}, {channels}), both with a bias (Figure 3: 'Linear, Bias'); print your module "
            f"and irnet_lib.blocks.SqueezeExcite({channels}, {reduction}) to compare")


def _check_one_size(cls, channels: int, reduction: int) -> str | None:
    from ..blocks import SqueezeExcite
    torch.manual_seed(2)
    reference = SqueezeExcite(channels, reduction).eval()
    name = f"{getattr(cls, '__name__', 'your module')}({channels}, {reduction})"
    mine, error = try_student_code(f"{name}.__init__", cls, channels, reduction)
    if error:
        return error
    if not isinstance(mine, torch.nn.Module):
        return f"{name} is a {type(mine).__name__}, not an nn.Module (subclass nn.Module and call super().__init__())"
    _, error = try_student_code(f"loading SqueezeExcite's weights into {name}", mine.load_state_dict,
                                reference.state_dict())
    if error:
        return f"the weights do not load: {error} ({_expected_fields(channels, reduction)})"
    x = torch.randn(3, channels, 7, 5)
    with torch.no_grad():
        y, error = try_student_code(f"{name}.forward", mine.eval(), x.clone())
        if error:
            if "shapes cannot be multiplied" in error:
                error += " (the squeeze pools over H and W, dims (2, 3): z = GAP(x) has shape (B, C))"
            return error
        expected = reference(x)
        problem = compare(name, y, expected)
        if problem and y.shape != expected.shape:
            return problem + (" (forward returns x scaled channel by channel, not the channel weights)"
                              if tuple(y.shape) == tuple(expected.shape[:2]) else "")
        if problem:
            slip = next((words for words, wrong in _usual_slips(reference, x).items()
                         if wrong.shape == y.shape and torch.allclose(y, wrong, atol=1e-5)), None)
            return problem + (f": it looks like {slip}" if slip else
                              ". Check the usual slips: softmax instead of sigmoid, scaling by the pre-activation, "
                              "a missing ReLU or bias, pooling over the wrong axes")
    return None


def check_squeeze_excite(cls) -> tuple[bool, str]:
    """Notebook 02: the student's SE module with SqueezeExcite's weights must give its outputs."""
    for channels, reduction in SIZES:
        problem = _check_one_size(cls, channels, reduction)
        if problem:
            return False, problem
    return True, ("your module is Figure 3's squeeze-and-excite: with SqueezeExcite's weights it gives the same "
                  "outputs (64 channels, R = 4; 96 channels, R = 8).")


EXERCISES = {
    "02.1": Exercise(_one_se_params,
                     hint="Ne = 4 x 160 and Ne / R hidden units; each Linear has in x out weights plus one bias per "
                          "output (section 4's formula)."),
    "02.2": Exercise(lambda: _se_macs(se_reduction=16),
                     hint="the linears act once per image, on the pooled vector: 2 Ne (Ne // R) MACs per SE layer, "
                          "summed over the Ne of all 16 blocks (block_widths()); R = 16 this time."),
    "02.3": Exercise(lambda: _se_macs((3, 112, 112), components=("se", "se_scale")),
                     hint="add two parts: the linears (do they see the resolution?) and the scaling, one multiply per "
                          "element of every SE input (how does that grow when H and W double?)."),
    "02.4": CodeExercise(check_squeeze_excite),
}
