"""``AtomicCheckpointer``: SpeechBrain's Checkpointer, crash-safe.

SpeechBrain writes a checkpoint in place: ``CKPT.yaml`` first (which is what
makes a folder count as a checkpoint), then one ``.ckpt`` file per
recoverable. A process killed during a save (an SSPS checkpoint at
VoxCeleb2 scale is gigabytes) therefore leaves a newest checkpoint that is
listed and cannot be loaded, and the run cannot restart.

Here a checkpoint is written into ``<save>/partial-CKPT+<name>/`` (a name the
listing ignores), ``CKPT.yaml`` last, every file flushed to disk, and only
then renamed to ``CKPT+<name>`` (one atomic ``rename`` on POSIX). A run
killed during a save keeps its previous checkpoint as the newest; the
partial folder is removed by the next save. Recovery also falls back: if
the chosen checkpoint cannot be loaded (truncated or corrupt file, say from a
copy interrupted by hand), a warning names it and the next one in the same
order is tried.
"""

import logging
import os
import pickle
import shutil
import time
import zipfile

import yaml

from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = "partial-"
# What a truncated or corrupt checkpoint file raises when torch.load reads it.
UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError)


def _fsync_tree(folder):
    """Flushes every file of ``folder`` and the folder entry itself."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointer(Checkpointer):
    """Checkpointer whose checkpoints appear complete or not at all."""

    def _partial_path(self, final):
        return final.with_name(PARTIAL_PREFIX + final.name)

    def _new_checkpoint_dirpath(self):
        return self._partial_path(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name):
        return self._partial_path(super()._custom_checkpoint_dirpath(name))

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):
        # Called by the parent before any recoverable is written: only build
        # the meta here; the file is written last, in save_checkpoint.
        self._pending_meta = {"unixtime": time.time(), "end-of-epoch": end_of_epoch, **meta_to_include}
        return self._pending_meta

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Writes into ``partial-CKPT+...`` and renames it when complete."""
        if if_main_process():
            self._remove_partials()
        saved = super().save_checkpoint(meta, end_of_epoch, name, logging.DEBUG)
        ddp_barrier()  # recoverables saved on every rank are written
        final = None
        if if_main_process():
            partial = saved.path
            final = partial.with_name(partial.name[len(PARTIAL_PREFIX):])
            # The meta file makes the folder a checkpoint: write it last.
            with open(partial / METAFNAME, "w", encoding="utf-8") as fo:
                fo.write("# yamllint disable\n")
                fo.write(yaml.dump(self._pending_meta))
            _fsync_tree(partial)
            if final.exists():  # a custom name reused: replace the old one
                shutil.rmtree(final)
            os.rename(partial, final)
            kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
            logger.log(verbosity, "Saved an %s checkpoint in %s", kind, final)
        final = ddp_broadcast(final, src=0)
        ddp_barrier()
        if saved is None:
            return None
        files = {k: final / v.name for k, v in saved.paramfiles.items()}
        return Checkpoint(final, saved.meta, files)

    def _remove_partials(self):
        """Removes folders left by saves that did not finish."""
        if not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.is_dir() and path.name.startswith(PARTIAL_PREFIX + CKPT_PREFIX):
                logger.warning("removing %s, left by a save that did not finish", path)
                shutil.rmtree(path, ignore_errors=True)

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None):
        """Loads the checkpoint SpeechBrain would choose; if it is unreadable,
        warns and tries the next one in the same order (None if none loads)."""
        unreadable = set()

        def readable(ckpt):
            return ckpt.path not in unreadable and (ckpt_predicate is None or ckpt_predicate(ckpt))

        while True:
            chosen = self.find_checkpoint(importance_key, max_key, min_key, readable)
            if chosen is None:
                if unreadable:
                    raise RuntimeError(
                        f"no checkpoint in {self.checkpoints_dir} can be loaded "
                        f"({', '.join(sorted(p.name for p in unreadable))}): move them away to start afresh"
                    )
                logger.info("Would load a checkpoint here, but none found yet.")
                return None
            try:
                self.load_checkpoint(chosen)
                return chosen
            except UNREADABLE as err:
                logger.warning(
                    "checkpoint %s cannot be loaded (%s: %s); trying the previous one",
                    chosen.path, type(err).__name__, str(err).splitlines()[0] if str(err) else "",
                )
                unreadable.add(chosen.path)
