"""The two heads a learned model may end in, and what each means to training and to the daemon.

- ridge: regression on the gain of asking the cloud (cloud quality minus edge quality, in [-1, 1]).
- logistic: classification of "the cloud is strictly better" (gain > 0); its probability p becomes the
  gain-like value 2p - 1, so the daemon's contract stays one number per row in [-1, 1], read the same way.

Within a head, the PCA size and the regularisation are chosen by each head's own cross-validated loss
(squared error, log loss); across heads, by the out-of-fold AUC of "the cloud is strictly better", which is
what the arbiter ranks requests by (router/core/arbiters/training.py). The ONNX export of a logistic head
ends in the same single output as a ridge's: nodes after the classifier turn its probability into 2p - 1,
so router/core/arbiters/learned.py loads either without knowing which. Needs the [train] extra.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

RIDGE = "ridge"
LOGISTIC = "logistic"
HEADS = (RIDGE, LOGISTIC)
CV_LOSS = {RIDGE: "neg_mean_squared_error", LOGISTIC: "neg_log_loss"}
_LOGISTIC_MAX_ITER = 5000
_GAIN_OUTPUT = "gain"


def build_model(head: str, components: int, alpha: float, width: int, feature_count: int) -> Pipeline:
    """Standardized features and, with components > 0, the embedding reduced to that many principal
    components (the corpus has hundreds of rows: hundreds of raw dimensions would drown the features),
    then the head; `alpha` is ridge's alpha, or the inverse of the logistic regression's C."""
    final = (Ridge(alpha=alpha) if head == RIDGE
             else LogisticRegression(C=1.0 / alpha, max_iter=_LOGISTIC_MAX_ITER))
    if components == 0:
        return make_pipeline(StandardScaler(), final)
    features = list(range(feature_count))
    # Column lists, not slices: skl2onnx exports only explicit indices.
    columns = ColumnTransformer([("features", StandardScaler(), features),
                                 ("embedding", make_pipeline(PCA(components, random_state=0), StandardScaler()),
                                  list(range(feature_count, width)))])
    return make_pipeline(columns, final)


def target(head: str, gains: np.ndarray) -> np.ndarray:
    return gains if head == RIDGE else (gains > 0).astype(np.int64)


def predicted_gain(head: str, model: Pipeline, x: np.ndarray) -> np.ndarray:
    if head == RIDGE:
        return model.predict(x)
    return 2.0 * model.predict_proba(x)[:, 1] - 1.0


def out_of_fold_auc(head: str, model: Pipeline, x: np.ndarray, gains: np.ndarray, folds: Any,
                    groups: Optional[Sequence[str]]) -> Optional[float]:
    """AUC for "the cloud is strictly better" of the out-of-fold predictions; None with one class only."""
    better = gains > 0
    if not 0 < better.sum() < len(better):
        return None
    method = "predict" if head == RIDGE else "predict_proba"
    predicted = cross_val_predict(clone(model), x, target(head, gains), cv=folds, groups=groups, method=method)
    priority = predicted if head == RIDGE else predicted[:, 1]
    return float(roc_auc_score(better, priority))


def export_onnx(head: str, model: Pipeline, width: int, input_name: str):
    """The fitted pipeline as ONNX with one float output per row: the gain (ridge), or 2p - 1 (logistic)."""
    types = [(input_name, FloatTensorType([None, width]))]
    if head == RIDGE:
        return convert_sklearn(model, initial_types=types)
    onnx_model = convert_sklearn(model, initial_types=types, options={id(model.steps[-1][1]): {"zipmap": False}})
    graph = onnx_model.graph
    probabilities = next(output.name for output in graph.output if output.name.startswith("probabilities"))
    graph.initializer.extend([numpy_helper.from_array(np.array([1], dtype=np.int64), "hr_cloud_better_column"),
                              numpy_helper.from_array(np.array(2.0, dtype=np.float32), "hr_two"),
                              numpy_helper.from_array(np.array(1.0, dtype=np.float32), "hr_one")])
    graph.node.extend([
        helper.make_node("Gather", [probabilities, "hr_cloud_better_column"], ["hr_p_cloud_better"], axis=1),
        helper.make_node("Mul", ["hr_p_cloud_better", "hr_two"], ["hr_two_p"]),
        helper.make_node("Sub", ["hr_two_p", "hr_one"], [_GAIN_OUTPUT]),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(_GAIN_OUTPUT, TensorProto.FLOAT, [None, 1]))
    return onnx_model
