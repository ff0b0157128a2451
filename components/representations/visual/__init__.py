"""Visual listing representations (paper 000 §3.1, A.5; DESIGN §7).

A multitask image classifier on an EfficientNetB0 backbone whose final 1280-d conv is
replaced by a 256-d conv block; the block's pooled output is the listing's visual vector.

- ``images``: resolve listing image URIs in the lake, read and decode them in parallel;
- ``sampler``: one dataset per classification task and the sampler that builds balanced
  batches whose loss is masked to each example's own head;
- ``model``: backbone, embedding block, heads, augmentation, the two freezing phases;
- ``trainer``: the training loop (phase 1 frozen, phase 2 last layers unfrozen) and batch inference;
- ``step``: :class:`~components.representations.visual.step.VisualRepresentation` and the DAG step ``run``.
"""
