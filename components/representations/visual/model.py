"""The multitask visual model (paper 000 §3.1.1, A.5.1).

    x (0-255 RGB) -> augmentation (training only) -> EfficientNetB0 up to block7a_project_bn
      -> Conv2D(embedding_dim, 1x1) -> BatchNorm -> swish -> global average pool = e (the representation)
      -> one Dense softmax head per task on e

The 256-d conv block replaces EfficientNetB0's final 1x1 conv (``top_conv``, 1280 filters,
with ``top_bn``/``top_activation``), so the representation has the size the paper wants. The
embedding model (input -> e) is what inference and later days use; the training model
wraps it with augmentation and the heads. Keras's EfficientNet scales and normalizes its
input itself, so images are fed as 0-255 floats.

Training runs in two phases: phase 1 freezes the whole backbone (only the conv block and
heads learn); phase 2 unfreezes the backbone's last ``unfreeze_last`` layers except
BatchNormalization layers, which stay frozen (in inference mode) as is usual when fine-tuning,
so small batches do not overwrite their statistics. Adam(lr, 0.9, 0.999, 1e-7) in both.

Without an ImageNet weights file the backbone starts from random init, and its frozen
BatchNorm layers hold their initial statistics (mean 0, variance 1), i.e. they do not
normalize: activations then shrink about tenfold per stage (~1e-6 at block7a_project_bn on
the synthetic images) while still carrying the image's information. Phase 1 learns little
from such features, and phase 2 must train the whole backbone (``unfreeze_last`` >= its 234
layers) for the vectors to separate taxonomies; that small-signal start trains stably, unlike
re-estimating the BatchNorm statistics from the data, which was measured to lose the color signal.
"""
from __future__ import annotations

import os
import tempfile

from components.lake import fs
from components.representations.config import VisualConfig
from components.step import StepError

BACKBONE_NAME = "efficientnetb0"
BACKBONE_OUTPUT = "block7a_project_bn"
"""The last backbone layer kept; EfficientNetB0's top_conv/top_bn/top_activation after it are replaced."""
REPLACED_LAYERS = ("top_conv", "top_bn", "top_activation")
EMBEDDING_LAYER = "embedding"


def _keras():
    import keras

    return keras


def load_backbone_weights(model, weights_path: str) -> None:
    """Load a local (or object-store) ImageNet weights file into a full ``include_top=False`` EfficientNetB0.

    Accepts Keras's ``efficientnetb0_notop.h5`` (legacy HDF5) or a Keras 3 ``.weights.h5``;
    raises :class:`StepError` when the file is missing or does not fit the architecture.
    """
    if not fs.exists(weights_path):
        raise StepError(f"visual: representations.visual.weights_path = {weights_path!r} does not exist. Put the "
                        "EfficientNetB0 ImageNet weights there (Keras's efficientnetb0_notop.h5) or set "
                        "weights_path to null to train from random init")
    suffix = ".weights.h5" if weights_path.endswith(".weights.h5") else os.path.splitext(weights_path)[1] or ".h5"
    with tempfile.TemporaryDirectory(prefix="adsformer-weights-") as tmp:
        local = weights_path
        if not fs.is_local(weights_path):
            local = os.path.join(tmp, "backbone" + suffix)
            with open(local, "wb") as f:
                f.write(fs.read_bytes(weights_path))
        elif weights_path.startswith("file://"):
            local = weights_path[len("file://"):]
        try:
            model.load_weights(local)
        except (ValueError, OSError, KeyError, TypeError) as e:
            raise StepError(f"visual: weights file {weights_path} does not fit an EfficientNetB0 without its "
                            f"classification top ({type(e).__name__}: {str(e)[:500]}). Use Keras's "
                            "efficientnetb0_notop.h5 (include_top=False) or set weights_path to null") from e


def build_backbone(image_size: int, weights_path: str | None = None):
    """EfficientNetB0 (``include_top=False``) cut after ``block7a_project_bn``: (s, s, 3) -> (s/32, s/32, 320)."""
    keras = _keras()
    full = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if weights_path:
        load_backbone_weights(full, weights_path)
    return keras.Model(full.input, full.get_layer(BACKBONE_OUTPUT).output, name=BACKBONE_NAME)


def build_embedding_model(cfg: VisualConfig, image_size: int | None = None):
    """Input image (0-255) -> the ``embedding_dim`` representation: backbone, 1x1 conv block, global average pool."""
    keras = _keras()
    size = image_size or cfg.image_size
    backbone = build_backbone(size, cfg.weights_path)
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone(inputs)
    x = keras.layers.Conv2D(cfg.embedding_dim, 1, padding="same", use_bias=False, name="embedding_conv")(x)
    x = keras.layers.BatchNormalization(name="embedding_bn")(x)
    x = keras.layers.Activation("swish", name="embedding_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(x)
    return keras.Model(inputs, x, name="visual_embedding")


def backbone_of(embedding_model):
    return embedding_model.get_layer(BACKBONE_NAME)


def build_augmentation(cfg: VisualConfig, seed: int):
    """Random rotation, translation, zoom and contrast (paper 000 §3.1.1); identity outside training.

    None when every factor is 0 (no augmentation)."""
    keras = _keras()
    layers = []
    if cfg.rotation > 0:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="nearest", seed=seed, name="rotation"))
    if cfg.translation > 0:
        layers.append(keras.layers.RandomTranslation(cfg.translation, cfg.translation, fill_mode="nearest",
                                                     seed=seed + 1, name="translation"))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="nearest", seed=seed + 2, name="zoom"))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 3, name="contrast"))
    return keras.Sequential(layers, name="augmentation") if layers else None


def build_training_model(embedding_model, heads: dict[str, int], cfg: VisualConfig, seed: int):
    """The multitask classifier: augmentation -> embedding model -> one softmax head (logits) per task."""
    keras = _keras()
    size = embedding_model.input_shape[1]
    inputs = keras.Input((size, size, 3), name="image")
    augmentation = build_augmentation(cfg, seed)
    e = embedding_model(augmentation(inputs) if augmentation is not None else inputs)
    outputs = {name: keras.layers.Dense(n, name=name)(e) for name, n in heads.items()}
    return keras.Model(inputs, outputs, name="visual_multitask")


def set_phase(embedding_model, phase: int, unfreeze_last: int) -> list[str]:
    """Freeze the backbone (phase 1) or unfreeze its last ``unfreeze_last`` layers but BatchNorm (phase 2).

    Returns the names of the backbone layers left trainable. Recompile the model afterwards.
    """
    keras = _keras()
    backbone = backbone_of(embedding_model)
    if phase == 1:
        backbone.trainable = False
        return []
    if phase != 2:
        raise ValueError(f"phase must be 1 or 2, not {phase}")
    backbone.trainable = True
    layers = backbone.layers
    tail = set(id(layer) for layer in layers[len(layers) - min(unfreeze_last, len(layers)):])
    trainable = []
    for layer in layers:
        on = id(layer) in tail and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = on
        if on:
            trainable.append(layer.name)
    return trainable


def compile_model(model, task_names: list[str], learning_rate: float) -> None:
    """Adam(lr, 0.9, 0.999, 1e-7) (paper 000 A.5.1); sparse CE per head weighted by the head's task mask.

    Keras sums the heads' losses, each divided by the batch size, which is the batch mean of
    each example's own head's loss (see ``sampler``).
    """
    keras = _keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        loss={name: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for name in task_names},
        weighted_metrics={name: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for name in task_names},
    )
