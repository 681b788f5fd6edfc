"""A tiny, deterministic training run of jaxseg's one loop, for the reliability tests.

Run as a script: a subprocess that a test can SIGKILL, or one process of a ``jax.distributed``
job, or an uninterrupted reference run::

  python tests/reliability/_train_worker.py --workdir W --epochs 3 --out W/result.npz
  python tests/reliability/_train_worker.py ... --resume            # continue from W's checkpoints
  python tests/reliability/_train_worker.py ... --kill-after-save best:1   # SIGKILL itself there
  python tests/reliability/_train_worker.py ... --coordinator localhost:PORT --num-processes 2 \
      --process-id I                                              # process I of a 2-process job

The number of host CPU devices comes from the environment (``XLA_FLAGS``, see ``_harness.py``).

The run: a UNet2D of the hierarchical study at width 1/16 (4/8/16 channels) on 32 x 32 slices of
two synthetic 9-class volumes, the paper's hierarchical cross-entropy (alpha = 1), Adam 1e-3,
global batches of 4 slices, 4 steps per epoch, a host-side validation Dice for model selection.
Everything is a pure function of the seed, so two runs -- interrupted or not, on any number of
devices or processes -- must end with the same parameters.

The script prints one line per event to stdout (flushed), which the tests watch:
``batch E I`` before step ``I`` of epoch ``E`` is fed, ``epoch E done`` after the epoch's
validation (its checkpoint is written right after), the loop's own log lines, and ``finished``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence

# Importable without side effects (jax is imported inside the functions).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH_SIZE = 4
STEPS_PER_EPOCH = 4
IMAGE_SIZE = 32
SEED = 1


def make_volumes():
  """Two 32 x 32 x 4 synthetic cases with 5 of the 9 pelvic classes, and a validation case."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxseg.data.pipeline import Volume  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1234)
  volumes = []
  for i in range(3):
    label = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 4), np.uint8)
    label[6 + i:18 + i, 8:20] = 1
    label[12:20, 4 + i:12 + i] = 4
    label[20:28, 14:26] = 6
    label[22:26, 2:8] = 2 + i
    image = (label * 0.4 + rng.normal(size=label.shape) * 0.3).astype(np.float32)
    volumes.append(Volume(image=image, label=label, spacing=(1.0, 1.0, 3.0), case_id=f"c{i}"))
  return volumes[:2], volumes[2:]


def build(epochs: int = 3):
  """``(trainer, loader, evaluate)`` of the tiny run (jax must be configured already).

  ``loader`` is the `jaxseg.data.pipeline.PatchLoader` of ``epochs`` epochs: the loop saves its
  Grain iterator state with each checkpoint and restores it on resume.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jaxseg.data.pipeline import PatchLoader  # pylint: disable=import-outside-toplevel
  from jaxseg.hierarchy import PAPER_PENALTY_MATRIX  # pylint: disable=import-outside-toplevel
  from jaxseg.losses.hierarchical import hierarchical_cross_entropy  # pylint: disable=import-outside-toplevel
  from jaxseg.metrics import overlap  # pylint: disable=import-outside-toplevel
  from jaxseg.models.unet2d import UNet2D, UNet2DConfig  # pylint: disable=import-outside-toplevel
  from jaxseg.train.loop import Trainer  # pylint: disable=import-outside-toplevel

  train, val = make_volumes()
  model = UNet2D(UNet2DConfig.hierarchical(width=0.0625))

  def loss_fn(logits, batch, params):
    return hierarchical_cross_entropy(logits, batch["label"], penalty=PAPER_PENALTY_MATRIX,
                                      alpha=params["alpha"])

  trainer = Trainer(model, optax.adam(1e-3), loss_fn)  # data-parallel over all (global) devices

  batches = PatchLoader(train, batch_size=BATCH_SIZE, patch_shape=(IMAGE_SIZE, IMAGE_SIZE),
                        foreground_prob=0.8, seed=SEED, num_epochs=epochs,
                        samples_per_epoch=BATCH_SIZE * STEPS_PER_EPOCH)

  val_images = np.moveaxis(val[0].channels_image, 2, 0)  # (z, x, y, 1) slices
  val_labels = np.moveaxis(val[0].label, 2, 0)
  apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False))

  def evaluate(state):
    # Host-side: parameters fetched to this process, the model run on its first local device,
    # so evaluation needs no cross-process arrays.
    variables = jax.device_get(state.variables)
    predicted = np.asarray(jnp.argmax(apply(variables, val_images), -1))
    dice = overlap.dice_from_confusion(
        overlap.confusion_matrix(predicted, val_labels, num_classes=9))
    return {"dice": float(np.nanmean(np.asarray(dice)[1:]))}

  return trainer, batches, evaluate


def init_state(trainer, sample_batch):
  """What ``trainer.init(jax.random.key(SEED), sample_batch)`` returns, with the initialisation
  compiled as one program: flax's eager ``init`` compiles every operation on its own, which costs
  tens of seconds per fresh process on a loaded 2-core machine."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxseg.data.pipeline import replicate  # pylint: disable=import-outside-toplevel
  from jaxseg.train.state import create_train_state  # pylint: disable=import-outside-toplevel
  inputs = trainer.model_inputs({k: jnp.asarray(v[:1]) for k, v in sample_batch.items()})
  init = jax.jit(lambda key, inputs: create_train_state(trainer.model, trainer.tx, inputs, key))
  return replicate(init(jax.random.key(SEED), inputs), trainer.mesh)


def run(workdir: str | None, *, epochs: int, resume: bool = False, step_delay: float = 0.0,
        announce=None):
  """Trains the tiny model; returns the loop's :class:`~jaxseg.train.loop.FitResult`."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxseg.train.loop import TrainConfig  # pylint: disable=import-outside-toplevel

  say = announce or (lambda _: None)
  trainer, loader, evaluate = build(epochs)

  class SlowBatches:
    """The loader, announcing (and optionally delaying) every batch; its state is the loader's."""

    def get_state(self):
      return loader.get_state()

    def set_state(self, state):
      loader.set_state(state)

    def __call__(self, epoch):
      for i, batch in enumerate(loader(epoch)):
        say(f"batch {epoch} {i}")
        if step_delay:
          time.sleep(step_delay)
        yield batch

  def evaluate_and_announce(state):
    metrics = evaluate(state)
    say(f"epoch {int(state.step) // STEPS_PER_EPOCH - 1} done")
    return metrics

  state = init_state(trainer, loader.sample())
  return trainer.fit(state, batches=SlowBatches(), evaluate=evaluate_and_announce,
                     loss_params={"alpha": 1.0},
                     config=TrainConfig(num_epochs=epochs, seed=SEED, progress=False,
                                        name="tiny"),
                     workdir=workdir, resume=resume, log=say)


def flat_params(tree) -> dict:
  """``{path: float32 array}`` of a pytree (for ``np.savez``)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_result(path: str, result) -> None:
  """Final and best parameters plus the per-epoch training losses, as one ``.npz``."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  arrays = {f"params{k}": v for k, v in flat_params(result.state.params).items()}
  arrays.update({f"best{k}": v for k, v in flat_params(result.best_state.params).items()})
  arrays["train_loss"] = np.asarray([h["train_loss"] for h in result.history], np.float64)
  arrays["best_epoch"] = np.asarray(result.best_epoch)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def install_kill_point(spec: str) -> None:
  """Makes the loop's checkpointer SIGKILL this process right after one given save.

  ``spec`` is ``KIND:EPOCH`` with KIND ``best`` or ``latest`` (the two checkpoint directories of
  :meth:`~jaxseg.train.loop.Trainer.fit`). The loop itself is unchanged: only the class it
  instantiates is wrapped, so the kill lands at an exact point between two writes.
  """
  import jaxseg.train.loop as loop  # pylint: disable=import-outside-toplevel
  kind, epoch = spec.split(":")
  base = loop.Checkpointer

  class KillingCheckpointer(base):

    def save(self, e, state, metadata):
      super().save(e, state, metadata)
      if e == int(epoch) and os.path.basename(self.directory) == kind:
        print(f"SIGKILL after saving {kind} {e}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

  loop.Checkpointer = KillingCheckpointer


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--out", required=True, help=".npz written when training ends")
  parser.add_argument("--resume", action="store_true")
  parser.add_argument("--step-delay", type=float, default=0.0,
                      help="seconds to sleep before each step (a window for SIGKILL)")
  parser.add_argument("--kill-after-save", default=None, metavar="KIND:EPOCH",
                      help="SIGKILL this process right after checkpoint KIND (best or latest) of "
                      "EPOCH is written (fault injection)")
  parser.add_argument("--coordinator", default=None, help="host:port of process 0")
  parser.add_argument("--num-processes", type=int, default=1)
  parser.add_argument("--process-id", type=int, default=0)
  args = parser.parse_args(argv)

  sys.path.insert(0, REPO_ROOT)
  if args.kill_after_save:
    install_kill_point(args.kill_after_save)
  import jax  # pylint: disable=import-outside-toplevel
  if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)

  def say(line: str) -> None:
    print(line, flush=True)

  say(f"started process {jax.process_index()}/{jax.process_count()} with "
      f"{jax.local_device_count()} local of {jax.device_count()} devices")
  result = run(args.workdir, epochs=args.epochs, resume=args.resume, step_delay=args.step_delay,
               announce=say)
  save_result(args.out, result)
  say("finished")
  if args.coordinator:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
