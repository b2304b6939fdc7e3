"""PyTorch's optimizer steps, seen through torch's global step hooks (no change to the user's code).

`every N steps` counts optimizer steps. A save that comes due at a step is taken where every
object agrees on that step: the random states are noted right after the step (nothing random
happens between a step and the end of its iteration), and the rest is captured at the next step's
pre-hook, after the scheduler and anything else the iteration does have run. Measured: saving in
the post-hook itself leaves the scheduler one step behind (last_epoch 29 after 30 steps).
Inside a framework's run (Trainer.train(), fit()) the framework's own step-end hook is used and
these hooks stand down.
"""

from __future__ import annotations

from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook


def patch(session, module):
    handles = [
        register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: session.checkpointer.before_optimizer_step(optimizer)),
        register_optimizer_step_post_hook(lambda optimizer, args, kwargs: session.checkpointer.after_optimizer_step(optimizer)),
    ]

    def undo():
        for handle in handles:
            handle.remove()

    return undo
