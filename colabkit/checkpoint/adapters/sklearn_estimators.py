"""scikit-learn estimators trained step by step (`partial_fit`, `warm_start`).

Saved as their fitted attributes (everything `vars()` holds beyond the constructor's parameters:
arrays as tensors, numbers as JSON), the position of each `np.random.RandomState` they draw from,
and the fitted scikit-learn helpers they hold (a LabelBinarizer, rebuilt from its parameters);
restored onto the live estimator, which the notebook creates with its parameters before the loop.
Nothing is pickled: an attribute that is some other object makes the estimator unsaveable, and
the message names it.
"""

from __future__ import annotations

import importlib

import numpy as np
from sklearn.base import BaseEstimator

from ..state import Unsaveable
from . import Restoration

KIND = "sklearn"
REBUILT = {"_loss_function_"}  # SGD*: every fit and partial_fit sets it again from the parameters


def claims(value) -> bool:
    return isinstance(value, BaseEstimator)


def _class(value) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _holds_estimator(value) -> bool:
    if isinstance(value, BaseEstimator):
        return True
    return isinstance(value, (list, tuple)) and any(_holds_estimator(item) for item in value)


def capture(value, encoder, name: str) -> dict:
    params = value.get_params(deep=False)
    for parameter, item in params.items():
        if _holds_estimator(item):  # a Pipeline's steps: their fitted state is theirs, not the pipeline's
            raise Unsaveable(f"its parameter {parameter} holds estimators, whose fitted state colabkit would miss: "
                             "name the fitted estimators themselves in %checkpoint")
    attributes, random_states, estimators = {}, {}, {}
    for attribute, item in vars(value).items():
        if attribute in params or attribute in REBUILT:
            continue
        if isinstance(item, np.random.RandomState):
            random_states[attribute] = encoder.encode(item.get_state(), f"{name}.{attribute}")
            continue
        if isinstance(item, BaseEstimator) and _class(item).startswith("sklearn."):  # a fitted helper (LabelBinarizer)
            estimators[attribute] = {"parameters": encoder.encode(item.get_params(deep=False), f"{name}.{attribute}"),
                                     **capture(item, encoder, f"{name}.{attribute}")}
            continue
        try:
            attributes[attribute] = encoder.encode(item, f"{name}.{attribute}")
        except Unsaveable:
            raise Unsaveable(f"its fitted attribute {attribute} is a {type(item).__name__}, which colabkit "
                             "can't save without pickling") from None
    state = {"class": _class(value), "attributes": attributes, "random_states": random_states,
             "estimators": estimators}
    if isinstance(params.get("random_state"), np.random.RandomState):
        state["parameter_random_state"] = encoder.encode(params["random_state"].get_state(), f"{name}.random_state")
    return state


def _set_state(random_state: np.random.RandomState, saved) -> None:
    name, keys, pos, has_gauss, cached = saved
    random_state.set_state((name, np.asarray(keys), pos, has_gauss, cached))


def restore(target, state: dict, name: str) -> Restoration:
    if not isinstance(target, BaseEstimator):
        return Restoration(problem=f"it is a fitted {state['class']}, and there is no live {name} to restore it "
                                   "into; create the estimator first (same class and parameters), then restore")
    if _class(target) != state["class"]:
        return Restoration(problem=f"it was a {state['class']}, but {name} is now a {_class(target)}")
    live_random_state = target.get_params(deep=False).get("random_state")
    if "parameter_random_state" in state and not isinstance(live_random_state, np.random.RandomState):
        return Restoration(problem=f"it drew from its own np.random.RandomState, but the live {name} has "
                                   f"random_state={live_random_state!r}")
    for attribute, value in state["attributes"].items():
        setattr(target, attribute, value)
    for attribute, saved in state["random_states"].items():
        random_state = np.random.RandomState()
        _set_state(random_state, saved)
        setattr(target, attribute, random_state)
    for attribute, saved in state["estimators"].items():
        if not saved["class"].startswith("sklearn."):  # scikit-learn's own classes only: no other code runs
            return Restoration(problem=f"its {attribute} names {saved['class']}, which is not scikit-learn's")
        module, _, qualname = saved["class"].rpartition(".")
        helper = getattr(importlib.import_module(module), qualname)(**saved["parameters"])
        nested = restore(helper, saved, f"{name}.{attribute}")
        if nested.problem is not None:
            return nested
        setattr(target, attribute, helper)
    if "parameter_random_state" in state:
        _set_state(live_random_state, state["parameter_random_state"])
    return Restoration()
