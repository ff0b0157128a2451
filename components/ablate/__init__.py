"""Ablation studies of paper 000 §5.1 (Tables 2-4): the variant registry (:mod:`.variants`) and the
runner behind ``adsformer ablate`` (:mod:`.run`)."""
