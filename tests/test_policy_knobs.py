"""Both Optuna search spaces (tilt: SearchSpace, mixture: MixtureOptions) follow one knob rule."""

from __future__ import annotations

import pytest

from generator.errors import ConfigError
from policy.mixture import MixtureOptions
from policy.study import SearchSpace


@pytest.mark.parametrize("space, field", [
    (SearchSpace(step=(0.2, 1.5)), "policy.step"),  # above 1
    (SearchSpace(uniform_share=(0.5, 0.6)), "policy.uniform_share"),  # heuristic 0.3 below low
    (SearchSpace(heuristic_width_scale=3.0), "policy.width_scale"),  # heuristic above high
    (SearchSpace(width_scale=(0.0, 2.0)), "policy.width_scale"),  # low not > 0
    (MixtureOptions(tilt_share=(0.1, 1.2)), "policy.mixture.tilt_share"),
    (MixtureOptions(max_shift=(0.2, 0.3)), "policy.mixture.max_shift"),
    (MixtureOptions(width_scale=("a", 2.0)), "policy.mixture.width_scale"),  # type: ignore[arg-type]
])
def test_a_bad_knob_is_one_line_naming_it(space: SearchSpace | MixtureOptions, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        space.validate()
    line = str(exc.value)
    assert line.startswith(f"{field}: needs 0 < low <= heuristic <= high") and "\n" not in line
    assert line.endswith("fix the bounds")


def test_scale_factors_may_exceed_one_and_are_searched_on_a_log_axis() -> None:
    s = SearchSpace(width_scale=(0.25, 4.0), heuristic_width_scale=2.0).validate()
    d = s.distributions()
    assert list(d) == ["step", "width_scale", "uniform_share", "n_slices"]
    assert d["width_scale"].log and not d["step"].log and (d["width_scale"].low, d["width_scale"].high) == (0.25, 4.0)
    assert (d["n_slices"].low, d["n_slices"].high) == (1, 3)
    assert s.heuristic() == {"step": 1.0, "width_scale": 2.0, "uniform_share": 0.3, "n_slices": 3}


def test_the_mixture_space_and_its_heuristic() -> None:
    m = MixtureOptions().validate()
    d = m.distributions(5)
    assert list(d) == ["uniform_share", "tilt_share", "max_shift", "width_scale", "n_slices"]
    assert d["width_scale"].log and d["n_slices"].high == 5
    assert m.heuristic(5) == {"uniform_share": 0.3, "tilt_share": 0.3, "max_shift": 0.15, "width_scale": 1.0,
                              "n_slices": 5}
    with pytest.raises(ConfigError, match=r"^--top-k: must be an integer >= 1, but got 0$"):
        m.distributions(0)
    with pytest.raises(ConfigError, match=r"^policy.mixture.uniform_share: low must be >= uniform_floor"):
        MixtureOptions(uniform_floor=0.3).validate()
    with pytest.raises(ConfigError, match=r"^--top-k"):
        SearchSpace(top_k=0).validate()
