"""The one error family users see: each message is one line naming the key or path and the fix."""


class FGZoomError(Exception):
    """Bad input or a failed run (config value, dataset path, image, checkpoint, NaN loss). Entry scripts
    print it as one line."""


class ConfigError(FGZoomError, ValueError):
    """A config key has a value that is not allowed. The message names the key and the allowed values."""


class InvalidSettingError(ConfigError):
    """A combination of model settings that is not valid (e.g. ``align_corners`` with a nearest mode). In a
    multirun, a job with such a setting stops in one line and the sweep runs on (a product of keys holds some)."""


class NonFiniteLossError(FGZoomError, FloatingPointError):
    """The training loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


class SummaryError(FGZoomError):
    """A sweep cannot be summarized: the folder or csv is missing, holds no job, or a sweep or bench file
    cannot be read."""
