"""``SSLSpeakerRecognition``: SpeechBrain's SpeakerRecognition with the
exported model's own decision threshold.

SpeechBrain's ``verify_files`` / ``verify_batch`` decide "same speaker" at a
cosine of 0.25, tuned for supervised models; self-supervised embeddings score
most pairs above it. The exported folder records the EER threshold of its
trial list as ``eer_threshold``; this class uses it as the default::

    model = SSLSpeakerRecognition.from_hparams(source=folder, savedir="tmp")
    score, same = model.verify_files("a.wav", "b.wav")
"""

from speechbrain.inference.speaker import SpeakerRecognition


class SSLSpeakerRecognition(SpeakerRecognition):
    """SpeakerRecognition whose default threshold is ``hparams.eer_threshold``."""

    def verify_batch(self, wavs1, wavs2, wav1_lens=None, wav2_lens=None, threshold=None):
        if threshold is None:
            threshold = self.hparams.eer_threshold
        return super().verify_batch(wavs1, wavs2, wav1_lens, wav2_lens, threshold)
