"""Fairseq plugin (``rescale_fairseq/``, loaded with ``--user-dir``) and its toy task.

Do not import ``projects.translation.rescale_fairseq`` as a package: fairseq
imports the plugin as the top-level module ``rescale_fairseq``, and importing it
under a second name would register the model twice.
"""
