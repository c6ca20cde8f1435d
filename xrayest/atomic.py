"""``fit`` all or nothing: an estimator whose fit raises or is interrupted is left exactly as it was.

A fit sets its learned attributes one after another (the classes before the network is trained,
a cascade's stages one by one).  Stopped half-way, by an unreadable image, a full disk or a
Ctrl-C, it would leave the new ``classes_`` over the old network: ``predict`` would answer with the
new labels from the old model, without a word.  ``all_or_nothing`` wraps an estimator's ``fit``
so that on any exception, ``KeyboardInterrupt`` and ``SystemExit`` included, every attribute is put
back as it was before the call (the previous model predicts as before, or the estimator is still
unfitted), and the exception is raised again.

It restores the instance's attributes, which is enough because a fit never changes a learned
object in place: it builds new ones (a new trunk, head, history, stage estimators) and assigns them.

Examples
--------
>>> from xrayest.atomic import all_or_nothing
>>> class Counter:
...     @all_or_nothing
...     def fit(self, fail):
...         self.n_ = getattr(self, "n_", 0) + 1
...         if fail:
...             raise ValueError("unreadable image")
...         return self
>>> c = Counter().fit(False)
>>> try:
...     c.fit(True)
... except ValueError:
...     pass
>>> c.n_
1
"""

from __future__ import annotations

import functools

__all__ = ["all_or_nothing"]


def all_or_nothing(fit):
    """Decorate ``fit`` so that it changes the estimator completely or not at all."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        before = dict(vars(self))
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    return wrapper
