"""tl_course: transfer learning for computer vision, one correct, tested call per step of the lecture.

>>> from tl_course import load_pretrained, replace_head, freeze, cached_features, fit
"""
from .data import (CLASSES, EUROSAT_CLASSES, BadImageError, DataUnavailableError, ImageDataset, Samples, Splits,
                   cat_detector_splits, check_images, data_root, eurosat_splits, find_eurosat_images,
                   find_pet_images, image_folder_splits, load_rgb,
                   train_transform)
from .features import (FeatureSet, bottom_stages, cache_dir, cached_features, clear_cache, extract_features,
                       features_fingerprint, load_features, preprocess_identity, prune_cache, save_features,
                       top_stages, warm_features)
from .freezing import (FrozenBatchNorm2d, StagedModel, build_optimizer, count_parameters, freeze, freeze_bn_stats,
                       param_groups,
                       replace_top_stages, stages, trainable_parameters, unfreeze)
from .models import (SUPPORTED_MODELS, Pretrained, WeightsUnavailableError, get_head, imagenet_categories,
                     load_pretrained, load_random_init, replace_head)
from .profiles import PROFILES, Profile, get_device, get_profile
from .checks import check_head, check_only_head_trains
from .training import Evaluation, History, evaluate, fit, predict, seed_everything

__version__ = "0.1.0"
