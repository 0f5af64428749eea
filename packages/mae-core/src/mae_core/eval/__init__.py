from .features import extract_features
from .finetune import Classifier, evaluate_classifier, finetune
from .knn import knn_classify
from .linear import LinearProbe, accuracy, linear_probe, mean_auc

__all__ = ["extract_features", "Classifier", "evaluate_classifier", "finetune", "knn_classify", "LinearProbe",
           "accuracy", "linear_probe", "mean_auc"]
