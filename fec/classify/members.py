"""Train several members of the fusion classifier at once, as one model with a leading member dimension.

    from fec.classify.members import Member, train_members
    from fec.classify.cross_validation import fold_assignment
    results = train_members(data, cfg, [Member(seed) for seed in range(3)])
    # each as train_seed(data, cfg, seed), selected on valid (no test: results[0].test is None)
    folds = torch.from_numpy(fold_assignment(len(data.splits["train"]), 5, seed=0))
    cv = [Member(0, fit=(folds != k).nonzero().flatten(), held=(folds == k).nonzero().flatten()) for k in range(5)]
    results = train_members(data, cfg, cv)   # each as train_seed(fold_data(data, fit, held), cfg, 0)

A member is one seeded run of `fec.classify.fusion_training.train_seed`: trained on some train
rows, selected on some held-out rows (the valid split, or a cross-validation fold of train). A
search trains many members of one shape (seeds, folds); here they share every step: each Linear
is one batched matrix product over the members, the Gram matrices of every member's rows are one
`bmm`, and one Adam updates them all.

A member is its alone run, draw for draw:
- initial weights and input statistics: `seed_everything(seed)`, then `build_model` on the
  member's own train rows (a fold member standardises with its fit rows' statistics);
- shuffling: `torch.randperm(rows, generator=g)`, g the generator `seed_everything` returned;
- dropout: masks drawn from a generator that holds the global RNG state of right after the model
  was built, in the alone run's order and shapes (one (rows, width) mask per Dropout per step; on
  CPU `F.dropout` is `x * empty_like(x).bernoulli_(1 - p).div_(1 - p)`);
- the loss: each member's own mean over its own rows. Members' row counts may differ (folds differ
  by a row), and so may the last batch of an epoch: members whose batches differ in size step in
  separate groups (nothing is padded), and a member with no rows left does not step;
- Adam: one optimiser over each member's slice of the stacked parameters, so each slice keeps its
  own step count and moments, exactly the alone run's per-parameter update;
- each Linear's backward is nn.Linear's, member by member (`MemberLinear`), and the power
  normalisation runs on each member's own tensor (see `StackedFusion.logits`).
On CPU a member then computes its alone run's arithmetic kernel for kernel and equals `train_seed`
bitwise (tests/classify/test_members.py), except where a matrix product is tiny: under 400
multiply-adds (rows x in x out) torch.bmm runs a loop of its own instead of the BLAS gemm that
nn.Linear calls, which may differ in the last bit. No layer of real features is that small; a toy
model's may be, on a short last batch. A member in the batch is bitwise the same member trained
alone by train_members, tiny matrices or not. On other devices each member's dropout draws from a
generator seeded with its seed: reproducible, but not the alone run's masks.

Members stop independently under train_seed's rule (an epoch improves when valid loss falls or
the selection metric rises; stop after `early_stop` stale epochs); a member that stops leaves the
batch, so no step is spent on it. Each result is what train_seed gives for that member: the
selected state (CPU tensors under DownstreamModel's keys), history, and the held rows scored by
train_seed's own code as `valid` (multi-label: thresholds tuned on them); no test. Its
`train_seconds` and each epoch's `seconds` are the batch's wall time, shared by its members.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fec.classify.allocator import keep_freed_memory
from fec.classify.fusion import DownstreamModel, power_normalise
from fec.classify.fusion_inputs import FusionData, SplitInputs
from fec.classify.fusion_training import (
    SINGLE_LABEL,
    Scoring,
    SeedResult,
    TrainConfig,
    build_model,
    finish_multilabel,
    log_epoch,
    pooled_saturation,
    score_splits,
    scored_logits,
    seed_everything,
)
from fec.classify.outputs import to_probabilities
from fec.core.metrics import classification_metrics, multilabel_metrics

log = logging.getLogger(__name__)


# Tensors make dataclass equality ambiguous, so members compare (and hash) by identity.
@dataclass(frozen=True, eq=False)
class Member:
    """One seeded run: trained on the train rows `fit` (None: all of train) and selected on the train
    rows `held` (None: the valid split), as `train_seed(fold_data(data, fit, held), cfg, seed)`."""

    seed: int
    fit: torch.Tensor | None = None
    held: torch.Tensor | None = None


def member_data(data: FusionData, member: Member) -> FusionData:
    """The task as the member's alone run sees it: train cut to `fit`, the `held` rows in valid's
    place, no test (`fec.classify.cross_validation.fold_data` for a fold member)."""
    train, valid = data.splits["train"], data.splits["valid"]
    splits = {
        "train": train if member.fit is None else train.subset(member.fit.to(train.labels.device)),
        "valid": valid if member.held is None else train.subset(member.held.to(train.labels.device)),
    }
    return dataclasses.replace(data, splits=splits)


class MemberLinear(torch.autograd.Function):
    """Every member's Linear at once: y[m] = x[m] weight[m]^T + bias[m] for (members, rows, in) x.
    The backward is nn.Linear's for each member: autograd's own for baddbmm forms the weight's
    gradient as x^T grad, which on CPU sums in another order than nn.Linear's grad^T x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, torch.bmm(grad.transpose(1, 2), x), grad.sum(dim=1)


class MemberDropout:
    """Dropout with each member's mask drawn from its own generator, as its alone run draws it: one
    (rows, width) Bernoulli mask per member and call."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        self.p, self.generators = p, generators

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        # F.dropout's own special cases: they draw nothing.
        if self.p == 0:
            return h
        if self.p == 1:
            return h * torch.zeros((), device=h.device)
        mask = torch.empty_like(h)
        for member_mask, generator in zip(mask, self.generators, strict=True):
            member_mask.bernoulli_(1 - self.p, generator=generator)
        return h * mask.div_(1 - self.p)


class StackedFusion:
    """The fusion classifiers of several members as one: each tensor of DownstreamModel's state_dict
    stacked along a leading member dimension, a forward giving every member's logits at once, and
    Adam over each member's slice of the parameters."""

    def __init__(self, template: DownstreamModel, states: list[dict[str, torch.Tensor]], lr: float, device: torch.device):
        self.config, self.decoders = template.config, len(template.decoder_shapes)
        self.lr = lr
        parameters = {name for name, _ in template.named_parameters()}
        self.tensors = {
            key: torch.stack([state[key] for state in states]).to(device).requires_grad_(key in parameters)
            for key in template.state_dict()
        }
        self.parameter_names = [key for key in self.tensors if key in parameters]
        self._track_members()

    def _track_members(self) -> None:
        """One Adam over every member's slice of the stacked parameters. The slices are views, so
        Adam's in-place update lands in the stacked tensors; each slice has its own Adam state, so a
        member that skips a step keeps its step count, as its alone run does."""
        self.views = [{name: self.tensors[name].detach()[m] for name in self.parameter_names} for m in range(self.members)]
        self.optimizer = torch.optim.Adam([v for views in self.views for v in views.values()], lr=self.lr, fused=True)

    @property
    def members(self) -> int:
        return len(next(iter(self.tensors.values())))

    def keep(self, positions: list[int]) -> None:
        """Only the members at `positions` from here on (the others have stopped), with their Adam state."""
        old_views, old_state = self.views, self.optimizer.state
        self.tensors = {key: t.detach()[positions].requires_grad_(t.requires_grad) for key, t in self.tensors.items()}
        self._track_members()
        for old, new in zip((old_views[p] for p in positions), self.views, strict=True):
            for name, view in new.items():
                self.optimizer.state[view] = old_state[old[name]]

    def member_state(self, position: int) -> dict[str, torch.Tensor]:
        """A member's state_dict, as a DownstreamModel of its own holds it, copied to CPU."""
        return {key: t[position].detach().to("cpu", copy=True) for key, t in self.tensors.items()}

    def logits(self, inputs: list[torch.Tensor], positions: list[int], dropout: MemberDropout | None = None) -> torch.Tensor:
        """(members, rows, classes) logits of the members at `positions` for their (members, rows, ...)
        inputs: DownstreamModel.forward with a member dimension, op for op, dropout where given (training)."""
        t, config = self.tensors, self.config
        if positions != list(range(self.members)):  # a group of the members: their slices (gradients reach the stack)
            t = {key: tensor[positions] for key, tensor in t.items()}
        standardised = [
            (x.float() - t[f"input_mean_{i}"].unsqueeze(1)) / t[f"input_std_{i}"].unsqueeze(1) for i, x in enumerate(inputs)
        ]
        decoders, encoders = standardised[: self.decoders], standardised[self.decoders :]
        layers = [decoder[:, :, i] for decoder in decoders for i in range(decoder.shape[2])]
        vectors = [block(layer, t, f"compress_layers.{k}.0", dropout) for k, layer in enumerate(layers)]
        for j, x in enumerate(encoders):
            name = f"encoder_projections.{j}"
            vectors.append(MemberLinear.apply(x, t[f"{name}.weight"], t[f"{name}.bias"]) if f"{name}.weight" in t else x)
        # Every member's rows as one batch of (vectors, D) matrices: the alone run's bmm, matrix for matrix.
        stacked = torch.stack(vectors, dim=2).flatten(0, 1)
        gram = torch.bmm(stacked, stacked.transpose(1, 2)).reshape(*vectors[0].shape[:2], -1)
        # Member by member: torch's sigmoid takes a vectorised path through most of a tensor and a scalar
        # one through its tail, which differ in the last bit; on its own tensor, each of a member's values
        # takes the path it takes in the alone run.
        pooled = torch.stack([power_normalise(member, config["pn"], config["sigma"]) for member in gram])
        raw = [decoder.mean(dim=2) for decoder in decoders]
        if config["raw_inputs"] == "all":
            raw += encoders
        h = torch.cat([pooled, *raw], dim=2)
        hidden = len(config["hidden"])
        for k in range(hidden):
            h = block(h, t, f"mlp.{3 * k}", dropout)
        return MemberLinear.apply(h, t[f"mlp.{3 * hidden}.weight"], t[f"mlp.{3 * hidden}.bias"])

    def step(self, loss: torch.Tensor, positions: list[int]) -> None:
        """Backward from the sum of the losses of the members at `positions`, then Adam for them alone."""
        for name in self.parameter_names:
            self.tensors[name].grad = None
        loss.backward()
        stepping = set(positions)
        for m, views in enumerate(self.views):
            for name, view in views.items():
                view.grad = self.tensors[name].grad[m] if m in stepping else None  # Adam skips a slice without a gradient
        self.optimizer.step()


def block(x: torch.Tensor, tensors: dict[str, torch.Tensor], linear: str, dropout: MemberDropout | None) -> torch.Tensor:
    """Linear + ReLU + Dropout for every member, as DownstreamModel's blocks."""
    h = torch.relu(MemberLinear.apply(x, tensors[f"{linear}.weight"], tensors[f"{linear}.bias"]))
    return h if dropout is None else dropout(h)


@dataclass
class MemberRun:
    """One member's own part of the batched training: its rows, its random streams, its early stopping."""

    member: Member
    fit_rows: torch.Tensor  # the train rows it trains on, in its alone run's order of them
    train_labels: torch.Tensor  # their labels
    held: SplitInputs  # the rows it is selected on
    shuffle: torch.Generator  # seed_everything's generator: the epochs' randperm
    dropout: torch.Generator
    best_loss: float = float("inf")
    best_score: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = -1
    stale: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float | None = None  # set when it stops

    def improves(self, valid: dict, select: str) -> bool:
        """train_seed's rule: valid loss below its best OR the selection metric above its best."""
        improved = False
        if valid["loss"] < self.best_loss:
            self.best_loss, improved = valid["loss"], True
        if valid[select] > self.best_score:
            self.best_score, improved = valid[select], True
        return improved


def start_member(data: FusionData, cfg: TrainConfig, member: Member, device: torch.device) -> tuple[MemberRun, DownstreamModel]:
    """The member's run and initial model, drawing what its alone run draws before its first epoch."""
    shuffle = seed_everything(member.seed)
    alone = member_data(data, member)
    model = build_model(alone, cfg)
    if device.type == "cpu":
        dropout = torch.Generator().set_state(torch.get_rng_state())  # the global stream the alone run's dropout goes on with
    else:
        dropout = torch.Generator(device).manual_seed(member.seed)
    train = data.splits["train"]
    fit = torch.arange(len(train)) if member.fit is None else member.fit
    run = MemberRun(member, fit.to(device), alone.splits["train"].labels.to(device), alone.splits["valid"], shuffle, dropout)
    return run, model


def same_size_groups(sizes: list[int]) -> list[list[int]]:
    """Positions of the members that have rows, grouped by how many: one group, unless their row
    counts differ (the last batch of an epoch, folds' held rows). A group computes without padding,
    so each member's matrices have its alone run's shapes."""
    groups: dict[int, list[int]] = {}
    for position, size in enumerate(sizes):
        if size:
            groups.setdefault(size, []).append(position)
    return list(groups.values())


def train_epoch(
    stacked: StackedFusion, runs: list[MemberRun], train: SplitInputs, cfg: TrainConfig, threshold: float, multilabel: bool
) -> list[dict]:
    """One pass of every member over its train rows in its own shuffled batches; each member's
    train loss and metrics, as fusion_training.train_epoch gives them."""
    device = train.labels.device
    orders = [torch.randperm(len(run.fit_rows), generator=run.shuffle).to(device) for run in runs]
    targets = [run.train_labels.float() if multilabel else run.train_labels for run in runs]
    loss_sums = [torch.zeros((), device=device) for _ in runs]
    preds = [torch.empty(tuple(run.train_labels.shape), dtype=torch.long, device=device) for run in runs]
    for start in range(0, max(len(order) for order in orders), cfg.batch_size):
        batches = [order[start : start + cfg.batch_size] for order in orders]
        for positions in same_size_groups([len(batch) for batch in batches]):
            inputs = [torch.stack([x[runs[m].fit_rows[batches[m]]] for m in positions]) for x in train.inputs]
            dropout = MemberDropout(cfg.dropout, [runs[m].dropout for m in positions])
            logits = stacked.logits(inputs, positions, dropout)
            losses = []
            for m, member_logits in zip(positions, logits.unbind(0), strict=True):
                batch = batches[m]
                if multilabel:
                    loss = F.binary_cross_entropy_with_logits(member_logits, targets[m][batch])
                    preds[m][batch] = (to_probabilities(member_logits.detach(), True) >= threshold).long()
                else:
                    loss = F.cross_entropy(member_logits, targets[m][batch])
                    preds[m][batch] = member_logits.detach().argmax(dim=1)
                loss_sums[m] += loss.detach() * len(batch)
                losses.append(loss)
            # Each member's parameters get the gradient of its own loss only.
            stacked.step(torch.stack(losses).sum(), positions)
    metrics = multilabel_metrics if multilabel else classification_metrics
    return [
        {"loss": (loss_sum / len(run.fit_rows)).item(), **metrics(run.train_labels.cpu().numpy(), pred.cpu().numpy())}
        for run, loss_sum, pred in zip(runs, loss_sums, preds, strict=True)
    ]


@torch.inference_mode()
def held_logits(stacked: StackedFusion, runs: list[MemberRun], batch_size: int) -> list[torch.Tensor]:
    """Each member's logits on its held rows, in evaluate's chunks of `batch_size` rows."""
    chunks: list[list[torch.Tensor]] = [[] for _ in runs]
    for start in range(0, max(len(run.held) for run in runs), batch_size):
        for positions in same_size_groups([len(run.held.labels[start : start + batch_size]) for run in runs]):
            sources = zip(*(runs[m].held.inputs for m in positions), strict=True)
            inputs = [torch.stack([x[start : start + batch_size] for x in source]) for source in sources]
            for m, member_logits in zip(positions, stacked.logits(inputs, positions), strict=True):
                chunks[m].append(member_logits)
    return [torch.cat(chunk) for chunk in chunks]


def member_result(run: MemberRun, model: DownstreamModel, data: FusionData, cfg: TrainConfig) -> SeedResult:
    """The member's selected state scored on its held rows by train_seed's own code."""
    model.load_state_dict(run.best_state)
    result = SeedResult(
        run.member.seed,
        run.best_epoch,
        len(run.history),
        valid={},
        test=None,
        train_seconds=run.train_seconds,
        history=run.history,
        state_dict=run.best_state,
    )
    held = dataclasses.replace(data, splits={"train": data.splits["train"], "valid": run.held})
    if data.multilabel:
        finish_multilabel(model, held, cfg, result)
    else:
        score_splits(model, held, cfg.eval_batch_size, SINGLE_LABEL, result)
    result.pn_saturated = pooled_saturation(model, run.held, cfg.eval_batch_size)
    return result


def train_members(
    data: FusionData, cfg: TrainConfig, members: list[Member], device: torch.device | str = "cpu"
) -> list[SeedResult]:
    """Train every member at once as one model with a leading member dimension; each result as
    train_seed gives it for that member alone (selected on its held rows, no test). `data` should
    already be on `device`."""
    device = torch.device(device)
    if not members:
        return []
    if device.type == "cpu":
        keep_freed_memory()  # as train_seed (fec/classify/allocator.py)
    runs, states = [], []
    for member in members:
        run, model = start_member(data, cfg, member, device)
        runs.append(run)
        states.append(model.state_dict())
    # The last member's model stands for every member's architecture: it scores each selected state at the end.
    stacked = StackedFusion(model, states, cfg.lr, device)
    del states
    train, multilabel = data.splits["train"], data.multilabel
    select = "macro_f1" if multilabel else "wf1"
    global_threshold = 0.5 if cfg.threshold is None else cfg.threshold
    during = Scoring(multilabel, global_threshold)
    log.info("training %d members together: seeds %s", len(runs), " ".join(str(m.seed) for m in members))
    active = list(runs)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        epoch_start = time.perf_counter()
        train_metrics = train_epoch(stacked, active, train, cfg, global_threshold, multilabel)
        logits = held_logits(stacked, active, cfg.eval_batch_size)
        valid_metrics = [scored_logits(held, run.held.labels, during)[0] for run, held in zip(active, logits, strict=True)]
        seconds = round(time.perf_counter() - epoch_start, 3)
        for position, (run, train_m, valid_m) in enumerate(zip(active, train_metrics, valid_metrics, strict=True)):
            improved = run.improves(valid_m, select)
            if improved:
                run.best_state, run.best_epoch, run.stale = stacked.member_state(position), epoch, 0
            else:
                run.stale += 1
            run.history.append({"epoch": epoch, "train": train_m, "valid": valid_m, "improved": improved, "seconds": seconds})
            log_epoch(run.member.seed, epoch, train_m, valid_m, improved, seconds, multilabel)
            if run.stale >= cfg.early_stop:
                log.info("seed %d: early stop after %d epochs without improvement", run.member.seed, run.stale)
                run.train_seconds = round(time.perf_counter() - started, 2)
        training = [position for position, run in enumerate(active) if run.train_seconds is None]
        if not training:
            break
        if len(training) < len(active):
            stacked.keep(training)
            active = [active[position] for position in training]
    for run in runs:
        if run.train_seconds is None:  # ran every epoch
            run.train_seconds = round(time.perf_counter() - started, 2)
    model.to(device)
    return [member_result(run, model, data, cfg) for run in runs]
