"""sedmon: watch the spectral edge of a training run while it trains.

    import sedmon

    run = sedmon.init(project="lm", name="baseline", model=model, optimizer=opt, every=100)
    for step, batch in enumerate(loader):
        loss = train_step(batch)            # a checkpoint is taken every 100 optimizer steps
        run.log({"loss": loss.item()}, step=step)
    run.finish()

`init` returns at once whatever the server does; the client never raises into the training
loop (only wrong arguments to `init` raise `ConfigError`). Server and token default to
$SEDMON_SERVER and $SEDMON_TOKEN. See docs/client.md.
"""

from sedmon._errors import CheckpointFolderError, ConfigError, SedmonError
from sedmon._run import Run, init
from sedmon.sketching import sketch_parameters

__version__ = "0.1.0"

__all__ = [
    "CheckpointFolderError",
    "ConfigError",
    "Run",
    "SedmonError",
    "__version__",
    "init",
    "sketch_parameters",
]
