"""Masked feature distillation from a frozen teacher: the shared part (:mod:`.common`: the teacher field, the default
T-MIM teacher trained and cached by the library, teacher features of the visible tokens, feature-loss terms) and one
file per method (:mod:`.dmae`, :mod:`.maskalign`), each registered as an image method of the core domain."""
