"""Integer speaker labels for supervised training, from the manifest's ``spk_id``.

The SSL systems read no labels (only their diagnostics do); the supervised
baseline (``ssps_ext.brains.supervised``) adds them to the training set built
by ``ssps_ext.data.train_dataset`` with ``add_speaker_labels``. Speakers are
numbered 0..n-1 in sorted ``spk_id`` order, so the mapping depends on the
manifest only (the same on every rank and after a resume).
"""

from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.dataio.dataset import add_dynamic_item

SPEAKER_COLUMN = "spk_id"
LABEL_KEY = "spk_label"


def speaker_encoder(dataset, expected=None, column=SPEAKER_COLUMN):
    """``CategoricalEncoder`` of the sorted speakers of ``dataset``.

    Arguments
    ---------
    dataset : DynamicItemDataset
        Built from a manifest with a ``column`` column.
    expected : int or None
        Number of speakers the caller (the ``n_speakers`` hyperparameter)
        expects; None takes the manifest's.

    Raises
    ------
    KeyError if the manifest has no ``column``; ValueError if ``expected``
    disagrees with the manifest.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> data = DynamicItemDataset({"u1": {"spk_id": "id2"}, "u2": {"spk_id": "id1"}, "u3": {"spk_id": "id2"}})
    >>> enc = speaker_encoder(data)
    >>> len(enc), enc.encode_label("id1"), enc.encode_label("id2")
    (2, 0, 1)
    """
    rows = list(dataset.data.values())
    if rows and column not in rows[0]:
        raise KeyError(
            f"the training manifest has no {column!r} column (it has {', '.join(rows[0])}): "
            "supervised training needs the speaker of every utterance"
        )
    names = sorted({row[column] for row in rows})
    if expected is not None and int(expected) != len(names):
        raise ValueError(
            f"n_speakers = {expected} but the training manifest has {len(names)} speakers: "
            "set n_speakers to null (take the manifest's count) or to that number"
        )
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(names)
    encoder.expect_len(len(names))
    return encoder


def add_speaker_labels(dataset, expected=None, column=SPEAKER_COLUMN, provides=LABEL_KEY):
    """Adds the integer speaker label ``provides`` to ``dataset``'s items and
    output keys; returns the ``CategoricalEncoder`` (``len`` = classes).

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> data = DynamicItemDataset({"u1": {"spk_id": "b"}, "u2": {"spk_id": "a"}})
    >>> data.set_output_keys(["id"])
    >>> enc = add_speaker_labels(data)
    >>> [data[i] for i in range(2)]
    [{'id': 'u1', 'spk_label': 1}, {'id': 'u2', 'spk_label': 0}]
    """
    encoder = speaker_encoder(dataset, expected, column)
    add_dynamic_item([dataset], encoder.encode_label, takes=column, provides=provides)
    dataset.set_output_keys({**dataset.pipeline.output_mapping, provides: provides})  # keeps the others
    return encoder
