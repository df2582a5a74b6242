"""The function both exact engines differentiate, as a function of the flat parameters.

Training loss of inner step t on its batch (x_t, y_t), and the validation objective at the end:

    f_t(theta) = loss_fn(model(x_t; theta), y_t)
    L(theta)   = sum_b n_b * loss_fn(model(x_b; theta), y_b) / sum_b n_b        (n_b = len(y_b))

``loss_fn`` reduces by the mean over its batch (``cross_entropy``'s default), so L is the exact
example-weighted mean over the whole validation split whatever the batch sizes (1000, 1000, 500
weigh 2:2:1, not 1:1:1). BatchNorm runs in train mode with batch statistics for every batch, as
in the paper's code: each batch is normalised with its own statistics, and running statistics
are neither used nor updated. This is the objective of every method (FDS scores and
differentiates it; baselines score their trials with :func:`validation_loss`).

Derivatives, with H the minibatch Hessian of f_t at theta: the gradient g = grad f_t(theta)
and Hessian-vector products H w in one of two exact forms,

    "reverse"  reverse-over-reverse: the pullback of grad f_t at w (H is symmetric, so it is H w);
    "forward"  forward-over-reverse: the directional derivative of grad f_t along w,

batched over the rows of a (K, P) matrix of vectors with ``torch.func.vmap``.

Every tensor these methods read from outside (theta, the vectors, each batch) is first made
64-byte aligned (:func:`fdshpo.reproducible.aligned`), so the results do not depend on where the
caller's tensors sit in memory (a resumed state, a batch sliced out of a larger buffer).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, jvp, replace_all_batch_norm_modules_, vjp
from torch.func import vmap as _vmap

from ..reproducible import aligned
from .flat import Footprint, ParamLayout

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


@functools.cache
def quiet_forward_ad() -> None:
    """Load torch's forward-AD decompositions once, silencing the deprecation warning torch
    raises about its own use of ``torch.jit.script`` when it loads them on first use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        getattr(torch.autograd.forward_ad, "_maybe_load_decompositions", lambda: None)()


class FlatObjective:
    """``model`` and ``loss_fn`` as functions of the flat parameter vector theta in R^P.

    Args:
        model: the network; its trainable parameters (``named_parameters`` order) are theta_0.
            It is deep-copied (BatchNorm replaced by batch-statistics BatchNorm), never modified.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, a mean over the batch.

    Attributes: ``layout`` (:class:`~fdshpo.engines.flat.ParamLayout`), ``theta0`` ((P,) copy of the
    model's parameters), ``device`` and ``dtype`` (those of the first trainable parameter).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        self.loss_fn = loss_fn
        self.layout = ParamLayout.of(model)
        footprint = Footprint.of(model)
        self.device, self.dtype = footprint.device, footprint.dtype
        self.theta0 = self.layout.flatten_module(model)
        stateless = copy.deepcopy(model).train()
        replace_all_batch_norm_modules_(stateless)  # batch statistics, no running-stat writes
        for p in stateless.parameters():
            p.requires_grad_(False)
        self._model = stateless
        self._grad_and_loss = grad_and_value(self.loss)

    def grad_and_loss(self, theta: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, f): the (P,) gradient and the scalar loss f(theta) on one batch."""
        return self._grad_and_loss(aligned(theta), aligned(inputs), aligned(targets))

    def loss(self, theta: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
             ) -> torch.Tensor:
        """f(theta) = loss_fn(model(inputs; theta), targets), a scalar tensor."""
        outputs = functional_call(self._model, self.layout.unflatten(theta), (inputs,))
        return self.loss_fn(outputs, targets)

    def to_device(self, inputs: torch.Tensor, targets: torch.Tensor) -> Batch:
        """The batch on the objective's device, each tensor 64-byte aligned."""
        return (aligned(inputs.to(self.device, non_blocking=True)),
                aligned(targets.to(self.device, non_blocking=True)))

    def grad_and_hvps(self, theta: torch.Tensor, vectors: torch.Tensor, inputs: torch.Tensor,
                      targets: torch.Tensor, form: str = "reverse",
                      grad_mask: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """(g, f, H @ vectors): gradient, loss and the Hessian-vector products.

        ``vectors``: (K, P), the K rows at once (one ``vmap``ped pass), or one (P,) vector
        (no batching). ``grad_mask(g) -> (P,)`` (reverse form only), when given, multiplies the
        vectors elementwise before the product: they become H (mask * w) (the adjoint of a
        clamped gradient, whose mask depends on g).
        """
        batched = vectors.dim() == 2
        theta, vectors = aligned(theta), aligned(vectors)
        inputs, targets = aligned(inputs), aligned(targets)

        def grad_and_loss(th):
            return self._grad_and_loss(th, inputs, targets)

        if form == "reverse":
            grad, pullback, loss = vjp(grad_and_loss, theta, has_aux=True)
            if grad_mask is not None:
                vectors = vectors * grad_mask(grad)
            (hvps,) = (_vmap(pullback) if batched else pullback)(vectors)
            return grad, loss, hvps.detach()  # the pullback's output carries autograd history
        if grad_mask is not None:
            raise ValueError("a gradient mask needs the reverse-over-reverse form")
        quiet_forward_ad()

        def grad_and_hvp(vector):
            return jvp(grad_and_loss, (theta,), (vector,))

        (grad, loss), (hvps, _) = (_vmap(grad_and_hvp) if batched else grad_and_hvp)(vectors)
        return (grad[0], loss[0], hvps.detach()) if batched else (grad, loss, hvps.detach())

    def validation(self, theta: torch.Tensor, val_batches: Iterable[Batch],
                   with_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(L(theta), grad L(theta)) of the module docstring: batch b weighs n_b / sum n_b.

        ``with_grad=False`` returns (L, None) without differentiating.
        Raises ValueError when ``val_batches`` is empty.
        """
        total_loss, total_grad, examples = self.validation_sums(theta, val_batches, with_grad)
        if examples == 0:
            raise ValueError("val_batches is empty; give at least one validation batch")
        if with_grad:
            total_grad.div_(examples)
        return total_loss / examples, total_grad

    def validation_sums(self, theta: torch.Tensor, val_batches: Iterable[Batch],
                        with_grad: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(sum_b n_b L_b, sum_b n_b grad L_b (None without ``with_grad``), sum_b n_b) over
        the batches; an empty batch adds nothing."""
        theta = aligned(theta)
        total_loss = torch.zeros((), device=self.device, dtype=self.dtype)
        total_grad = torch.zeros_like(theta) if with_grad else None
        examples = 0
        for inputs, targets in val_batches:
            n = len(targets)
            if n == 0:
                continue
            inputs, targets = self.to_device(inputs, targets)
            if with_grad:
                grad, loss = self.grad_and_loss(theta, inputs, targets)
                total_grad.add_(grad, alpha=n)
            else:
                with torch.no_grad():
                    loss = self.loss(theta, inputs, targets)
            total_loss += loss.detach() * n
            examples += n
        return total_loss, total_grad, examples


def validation_loss(model: nn.Module, val_batches: Iterable[Batch],
                    loss_fn: LossFn = nn.functional.cross_entropy) -> float:
    """L(theta) of the module docstring at the model's current parameters, as a float.

    Example-weighted mean of the mean-reducing ``loss_fn`` over every validation example,
    BatchNorm in train mode with each batch's statistics; the model is not modified. This is the
    validation loss every method reports and FDS differentiates.
    """
    objective = FlatObjective(model, loss_fn)
    loss, _ = objective.validation(objective.theta0, val_batches, with_grad=False)
    return float(loss)
