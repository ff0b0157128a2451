"""Next-day evaluation of the CTR/PCCVR models and their baselines (DESIGN §8; paper 000 §5)."""
from components.evaluate.metrics import *  # noqa: F401,F403 - the package re-exports the metrics
from components.evaluate.metrics import __all__  # noqa: F401
