"""DreamerV2's recurrent state-space model with discrete latents, and KL balancing.

A state is a dict of tensors with the same leading shape `(...)`:
- `deter` `(..., deter)`: the GRU state h_t;
- `stoch` `(..., stoch, discrete)`: z_t, one-hot samples (straight-through gradients);
- `logit` `(..., stoch, discrete)`: the logits z_t was drawn from.

Prior (imagination):  x = ELU(Linear([z_{t-1}, a_{t-1}])); h_t = GRU(x, h_{t-1});
                      p(z_t | h_t) = Cat(Linear(ELU(Linear(h_t)))).
Posterior (filtering): q(z_t | h_t, e_t) = Cat(Linear(ELU(Linear([h_t, e_t])))).
The GRU is DreamerV2's: one Linear over [x, h] to 3 parts, LayerNorm (eps 1e-3), update-gate bias -1.

Action-free mode (`action_dim=0`, as ContextWM pretrains on videos): the prior takes only z_{t-1}. This is exactly
the paper's zero action of size `fill_action=50`, since a zero input adds nothing to a Linear layer.
Actions follow DreamerV2's replay convention: `action[:, t]` is the action that led to observation t (the
previous action); it is ignored where `is_first[:, t]`, where the state restarts from zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rlpt.errors import ConfigError, DatasetShapeError

State = dict[str, torch.Tensor]


class WeightGradTape:
    """Collects one recurrent weight's per-step inputs and output gradients during a sequence, so that its weight
    gradient is one (T*B)-row matmul instead of T small ones plus T full-size accumulations. With a large weight
    and a small batch (deter 2048: 57 MB, B=16) each per-step weight gradient is memory-bound; batching them made
    the GRU's backward ~2x faster on a 2-core CPU."""

    def __init__(self) -> None:
        self.xs: dict[int, torch.Tensor] = {}
        self.gs: dict[int, torch.Tensor] = {}
        self.first: int | None = None


class _TapedLinear(torch.autograd.Function):
    """`x @ weight.T` for step `step` of a recurrence. Backward: the input gradient at once; the weight gradient
    of all steps when the earliest step's backward runs, which in a recurrence is the last one to run."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tape: WeightGradTape, step: int) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.tape, ctx.step = tape, step
        tape.xs[step] = x.detach()
        if tape.first is None or step < tape.first:
            tape.first = step
        return x @ weight.t()

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (weight,) = ctx.saved_tensors
        tape = ctx.tape
        grad_w = None
        if ctx.needs_input_grad[1]:
            tape.gs[ctx.step] = g
            if ctx.step == tape.first:
                steps = sorted(tape.gs)
                grad_w = torch.cat([tape.gs[s] for s in steps]).t() @ torch.cat([tape.xs[s] for s in steps])
                tape.gs.clear()
        grad_x = g @ weight if ctx.needs_input_grad[0] else None
        return grad_x, grad_w, None, None


class LayerNormGRUCell(nn.Module):
    """DreamerV2's GRU: `reset, cand, update = LN(Linear([x, h]))`; `h' = u * tanh(r * cand) + (1 - u) * h`
    with `u = sigmoid(update - 1)`. Inside a sequence, pass a `WeightGradTape` and the step index to batch the
    weight gradient over steps (same values; double backward is not supported on that path)."""

    def __init__(self, inp: int, size: int, update_bias: float = -1.0):
        super().__init__()
        self.size, self.update_bias = size, update_bias
        self.linear = nn.Linear(inp + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size, eps=1e-3)

    def forward(self, x: torch.Tensor, h: torch.Tensor, tape: WeightGradTape | None = None,
                step: int = 0) -> torch.Tensor:
        xh = torch.cat([x, h], -1)
        if tape is not None and torch.is_grad_enabled() and self.linear.weight.requires_grad:
            parts = _TapedLinear.apply(xh, self.linear.weight, tape, step)
        else:
            parts = self.linear(xh)
        reset, cand, update = self.norm(parts).split(self.size, -1)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update + self.update_bias)
        return update * cand + (1 - update) * h


class RSSM(nn.Module):
    """DreamerV2 RSSM with `stoch` categorical latents of `discrete` classes each (see the module docstring).

    `feat(state)` is `[deter, flattened stoch]`, of size `feat_dim = deter + stoch * discrete`."""

    def __init__(self, embed_dim: int, action_dim: int = 0, deter: int = 1024, hidden: int = 1024, stoch: int = 32,
                 discrete: int = 32, unimix: float = 0.0):
        super().__init__()
        for name, v in dict(embed_dim=embed_dim, deter=deter, hidden=hidden, stoch=stoch, discrete=discrete).items():
            if int(v) < 1:
                raise ConfigError(f"RSSM {name} must be >= 1, got {v}")
        if action_dim < 0 or not 0.0 <= unimix < 1.0:
            raise ConfigError(f"RSSM needs action_dim >= 0 and unimix in [0, 1), got {action_dim}, {unimix}")
        self.embed_dim, self.action_dim = embed_dim, action_dim
        self.deter, self.hidden, self.stoch, self.discrete, self.unimix = deter, hidden, stoch, discrete, unimix
        self.feat_dim: int = deter + stoch * discrete
        self.img_in = nn.Linear(stoch * discrete + action_dim, hidden)
        self.gru = LayerNormGRUCell(hidden, deter)
        self.img_out = nn.Linear(deter, hidden)
        self.img_logits = nn.Linear(hidden, stoch * discrete)
        # obs_out = Linear([deter, embed]) split in two so the embed half runs once over all T steps
        self.obs_deter = nn.Linear(deter, hidden)
        self.obs_embed = nn.Linear(embed_dim, hidden, bias=False)
        self.obs_logits = nn.Linear(hidden, stoch * discrete)

    # ------------------------------------------------------------------ states
    def initial(self, batch: int, device: torch.device | str | None = None) -> State:
        """The all-zeros state DreamerV2 starts (and restarts at `is_first`) from, leading shape `(batch,)`."""
        device = device if device is not None else self.img_in.weight.device
        z = torch.zeros(batch, self.stoch, self.discrete, device=device)
        return {"deter": torch.zeros(batch, self.deter, device=device), "stoch": z, "logit": z.clone()}

    def feat(self, state: State) -> torch.Tensor:
        """`(..., deter + stoch * discrete)`."""
        return torch.cat([state["deter"], state["stoch"].flatten(-2)], -1)

    def _dist_sample(self, logit: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """logit `(..., stoch*discrete)` -> (logit, one-hot stoch) `(..., stoch, discrete)`, straight-through."""
        logit = logit.reshape(*logit.shape[:-1], self.stoch, self.discrete)
        probs = logit.softmax(-1)
        if self.unimix > 0:
            probs = (1 - self.unimix) * probs + self.unimix / self.discrete
            logit = probs.log()
        if sample:
            idx = torch.multinomial(probs.reshape(-1, self.discrete).detach(), 1).reshape(probs.shape[:-1])
        else:
            idx = probs.argmax(-1)
        onehot = F.one_hot(idx, self.discrete).to(probs.dtype)
        return logit, onehot + probs - probs.detach()

    def _check_action(self, action: torch.Tensor | None, lead: tuple[int, ...], device) -> torch.Tensor:
        if self.action_dim == 0:
            if action is not None and action.shape[-1] != 0:
                raise DatasetShapeError(f"this RSSM is action-free (action_dim=0) but got actions of shape "
                                        f"{tuple(action.shape)}; pass None")
            return torch.zeros(*lead, 0, device=device)
        if action is None or tuple(action.shape) != (*lead, self.action_dim):
            got = None if action is None else tuple(action.shape)
            raise DatasetShapeError(f"RSSM expects actions of shape {(*lead, self.action_dim)}, got {got}")
        return action.float()

    # ------------------------------------------------------------------ one step
    def imagine_step(self, state: State, action: torch.Tensor | None = None, sample: bool = True) -> State:
        """Prior p(z_t | h_t) after taking `action` `(B, A)` (None when action-free) from `state`."""
        lead = tuple(state["deter"].shape[:-1])
        action = self._check_action(action, lead, state["deter"].device)
        inp = torch.cat([state["stoch"].flatten(-2), action], -1) if self.action_dim else state["stoch"].flatten(-2)
        x = F.elu(self.img_in(inp))  # (B, hidden)
        deter = self.gru(x, state["deter"])  # (B, deter)
        logit, stoch = self._dist_sample(self.img_logits(F.elu(self.img_out(deter))), sample)
        return {"deter": deter, "stoch": stoch, "logit": logit}

    def _post_from_prior(self, prior: State, embed_proj: torch.Tensor, sample: bool) -> State:
        h = F.elu(self.obs_deter(prior["deter"]) + embed_proj)
        logit, stoch = self._dist_sample(self.obs_logits(h), sample)
        return {"deter": prior["deter"], "stoch": stoch, "logit": logit}

    def _reset(self, state: State, action: torch.Tensor, is_first: torch.Tensor) -> tuple[State, torch.Tensor]:
        keep = (1.0 - is_first.float())[:, None]  # (B, 1)
        state = {k: v * (keep[:, :, None] if v.ndim == 3 else keep) for k, v in state.items()}
        return state, action * keep

    def obs_step(self, prev_state: State, prev_action: torch.Tensor | None, embed: torch.Tensor,
                 is_first: torch.Tensor | None = None, sample: bool = True) -> tuple[State, State]:
        """One filtering step: (posterior, prior) for observation embedding `embed` `(B, E)`; the state (and
        action) restart from zeros where `is_first` `(B,)` is true."""
        b = embed.shape[0]
        if embed.shape != (b, self.embed_dim):
            raise DatasetShapeError(f"RSSM expects embeddings (B, {self.embed_dim}), got {tuple(embed.shape)}")
        action = self._check_action(prev_action, (b,), embed.device)
        if is_first is not None:
            prev_state, action = self._reset(prev_state, action, is_first.reshape(b).to(embed.device))
        prior = self.imagine_step(prev_state, action if self.action_dim else None, sample)
        post = self._post_from_prior(prior, self.obs_embed(embed), sample)
        return post, prior

    # ------------------------------------------------------------------ sequences
    def observe(self, embed: torch.Tensor, action: torch.Tensor | None = None, is_first: torch.Tensor | None = None,
                state: State | None = None, sample: bool = True) -> tuple[State, State]:
        """Filter a sequence: embed `(B, T, E)`, action `(B, T, A)` (None when action-free), is_first `(B, T)`
        (default: only t=0) -> (post, prior) with tensors `(B, T, ...)`. `state` continues from a previous call."""
        if embed.ndim != 3 or embed.shape[-1] != self.embed_dim:
            raise DatasetShapeError(f"RSSM.observe expects embed (B, T, {self.embed_dim}), got {tuple(embed.shape)}")
        b, t, _ = embed.shape
        action = self._check_action(action, (b, t), embed.device)
        if is_first is None:
            is_first = torch.zeros(b, t, dtype=torch.bool, device=embed.device)
            if state is None:
                is_first[:, 0] = True
        elif tuple(is_first.shape) != (b, t):
            raise DatasetShapeError(f"is_first must be (B, T) = {(b, t)}, got {tuple(is_first.shape)}")
        is_first = is_first.to(embed.device)
        resets = is_first.any(0).tolist()  # skip the reset arithmetic at steps where no sequence restarts
        if state is None:
            state = self.initial(b, embed.device)
            resets[0] = resets[0] and self.action_dim > 0  # zeros need no reset; a first action still does
        proj = self.obs_embed(embed)  # (B, T, hidden): the embed half of obs_out, for all steps at once
        tape = WeightGradTape()  # the GRU's weight gradient: one matmul over all steps
        posts = []
        for i in range(t):
            prev, act = self._reset(state, action[:, i], is_first[:, i]) if resets[i] else (state, action[:, i])
            inp = torch.cat([prev["stoch"].flatten(-2), act], -1) if self.action_dim else prev["stoch"].flatten(-2)
            x = F.elu(self.img_in(inp))  # (B, hidden)
            deter = self.gru(x, prev["deter"], tape, i)  # (B, deter)
            state = self._post_from_prior({"deter": deter}, proj[:, i], sample)
            posts.append(state)
        post = {k: torch.stack([s[k] for s in posts], 1) for k in posts[0]}  # (B, T, ...)
        # the prior's head does not feed the recurrence, so it runs once over all T steps
        logit, stoch = self._dist_sample(self.img_logits(F.elu(self.img_out(post["deter"]))), sample)
        return post, {"deter": post["deter"], "stoch": stoch, "logit": logit}

    def imagine(self, state: State, actions: torch.Tensor | None = None, horizon: int | None = None,
                sample: bool = True) -> State:
        """Roll the prior forward from `state` `(B, ...)`: over `actions` `(B, H, A)`, or `horizon` steps when
        action-free. Returns the priors `(B, H, ...)`."""
        if actions is not None:
            horizon = actions.shape[1]
        if horizon is None or horizon < 1:
            raise ConfigError("RSSM.imagine needs actions (B, H, A) or horizon >= 1")
        out = []
        for i in range(horizon):
            state = self.imagine_step(state, None if actions is None else actions[:, i], sample)
            out.append(state)
        return {k: torch.stack([s[k] for s in out], 1) for k in out[0]}

    # ------------------------------------------------------------------ losses
    @staticmethod
    def kl(lhs_logit: torch.Tensor, rhs_logit: torch.Tensor) -> torch.Tensor:
        """KL(Cat(lhs) || Cat(rhs)) summed over the `stoch` variables: `(..., stoch, discrete)` -> `(...)`."""
        lp, lq = lhs_logit.log_softmax(-1), rhs_logit.log_softmax(-1)
        return (lp.exp() * (lp - lq)).sum((-2, -1))

    def kl_loss(self, post: State, prior: State, balance: float = 0.8, free: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """DreamerV2's KL balancing: `(1-balance)*max(free, KL(q || sg p)) + balance*max(free, KL(sg q || p))`,
        each KL averaged over all steps before the free-nats clamp. Returns (loss, mean KL(q || p))."""
        value = self.kl(post["logit"], prior["logit"])  # (B, T)
        lhs = self.kl(post["logit"], prior["logit"].detach()).mean()  # trains the posterior
        rhs = self.kl(post["logit"].detach(), prior["logit"]).mean()  # trains the prior
        free_t = torch.tensor(float(free), device=lhs.device)
        loss = (1 - balance) * torch.maximum(lhs, free_t) + balance * torch.maximum(rhs, free_t)
        return loss, value.mean()

    @staticmethod
    def entropy(state: State) -> torch.Tensor:
        """Entropy of the categorical latents, summed over variables: `(...)`."""
        lp = state["logit"].log_softmax(-1)
        return -(lp.exp() * lp).sum((-2, -1))


__all__ = ["RSSM", "LayerNormGRUCell", "State", "WeightGradTape"]
