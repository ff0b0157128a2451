"""Calibration of model logits into probabilities: Platt scaling (DESIGN §8; paper 000 §5.3)."""
from components.calibrate.platt import Platt, PlattFitError, downsampling_correction, fit_platt

__all__ = ["Platt", "PlattFitError", "downsampling_correction", "fit_platt"]
