"""puhui (普惠): run, fine-tune, compress, serve and explain models on the hardware you already have."""
__version__ = "0.1.0"

from .errors import BadInput, DoesNotFit, ModelNotFound, PuhuiError, Unsupported  # noqa: E402,F401


def load(name: str, task: str | None = None, **options):
    """Load a model from the store by name (or alias) and return its task object; options go to it (e.g. a text
    model's dtype, device, max_batch, context_length, quant="int4")."""
    from .tasks import load as _load
    return _load(name, task=task, **options)
