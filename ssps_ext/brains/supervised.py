"""``SupervisedBrain``: the supervised baseline, ECAPA-TDNN + AAM-softmax on speaker labels.

The upper bound of the results tables (issue 10): the same features,
encoder, augmentation and evaluation as the SSL systems, trained on the
speaker labels of the training manifest.

Per step:
  x      one random crop of each utterance, augmented (``crops: views: [1, s]``);
  y      ECAPA-TDNN representation (b, D);
  cos    cosines between y and the C class weights, SpeechBrain's
         ``ECAPA_TDNN.Classifier`` (b, 1, C);
  loss   AAM-softmax (Deng et al., "ArcFace: Additive Angular Margin Loss for
         Deep Face Recognition", arXiv:1801.07698), margin m = 0.2, scale s = 30,
         with SpeechBrain's ``LogSoftmaxWrapper(AdditiveAngularMargin(...))``:
         L = -1/b sum_i log( e^{s cos(theta_i,y_i + m)} / (e^{s cos(theta_i,y_i + m)} + sum_{c != y_i} e^{s cos theta_i,c}) )

The number of classes C is the number of speakers of ``train.csv``:
``prepare_training`` labels the training set (``ssps_ext.labels``), builds
the classifier from the ``classifier`` hyperparameter (a ``!name:`` with
``out_neurons`` left open) and registers it with the modules and the
Checkpointer, before ``fit`` creates the optimiser. ``n_speakers`` in the
yaml, when not null, must equal that number.
"""

from ..labels import add_speaker_labels
from .base import SSLBrain


class SupervisedBrain(SSLBrain):
    """Brain for supervised speaker classification (no SSPS)."""

    required_crops = {"views": 1}

    def prepare_training(self, train_set):
        """Checks the crops, adds the speaker labels to ``train_set`` and
        builds the classifier with one class per speaker (train.py, before
        fit). Returns the label encoder."""
        super().prepare_training(train_set)
        encoder = add_speaker_labels(train_set, expected=self.hparams.n_speakers)
        self.build_classifier(len(encoder))
        return encoder

    def build_classifier(self, n_classes):
        """Classifier with ``n_classes`` outputs, added to the modules (so the
        optimiser of ``fit`` trains it) and to the checkpoint."""
        classifier = self.hparams.classifier(out_neurons=n_classes).to(self.device)
        self.modules["classifier"] = classifier
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("classifier", classifier)

    def compute_forward(self, batch, stage):
        crop = batch.views.data.to(self.device)[:, 0]  # (b, 1, T) -> (b, T)
        y = self.encode(self.augment(crop))  # (b, D)
        return self.modules.classifier(y.unsqueeze(1))  # (b, 1, D) -> cosines (b, 1, C)

    def compute_objectives(self, predictions, batch, stage):
        labels = batch.spk_label.to(self.device)  # (b,) speaker indices (ssps_ext.labels)
        loss = self.hparams.loss(predictions, labels.unsqueeze(1))  # targets (b, 1)
        accuracy = (predictions.detach().squeeze(1).argmax(dim=-1) == labels).float().mean()
        self.record(loss=loss, accuracy=accuracy)
        return loss

