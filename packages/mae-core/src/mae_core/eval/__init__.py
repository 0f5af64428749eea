from .features import extract_features
from .fewshot import FEWSHOT_CLASSIFIERS, Episode, classify_episode, few_shot_eval, sample_episodes
from .finetune import Classifier, evaluate_classifier, finetune, load_classifier
from .knn import knn_classify
from .linear import LinearProbe, accuracy, linear_probe, mean_auc

__all__ = ["extract_features", "Classifier", "evaluate_classifier", "finetune", "load_classifier", "knn_classify",
           "LinearProbe", "accuracy", "linear_probe", "mean_auc", "FEWSHOT_CLASSIFIERS", "Episode", "classify_episode",
           "few_shot_eval", "sample_episodes"]
