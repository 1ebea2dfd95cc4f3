"""`run_search`: one search job end to end, behind one function the worker, CLI and tests share.

data -> budget checks (before any training) -> supernet (trained, or reused from the cache) ->
greedy slimming (or, for a MutualNet supernet, its width x resolution points) -> optional retraining
-> export: for every budget a channel-config JSON and the slim model files.  Progress goes to
``report`` (phases data/train/search/retrain/export/done with the whole job's percent), the cancel
check runs between steps, and everything is resumable from the work directory: the supernet's
checkpoints live in the cache, the search state, retrained models and results in ``workdir``.

Under several ranks (`engine.distributed`) every rank runs the job up to the end of the search:
data and latency tables are prepared by rank 0 first (the others then read its caches), the
supernet trains data-parallel and the greedy step's candidates are spread over the ranks.  Rank 0
alone reports, writes the search state and goes on to the uniform baseline, retraining and export;
the other ranks return ``{}`` once the search is done.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from engine.atomic import write_json
from engine.budget_fill import fill_budget
from engine.budgets import Budget, budgets_of, check_budgets, check_targets, first_fit, space_range, until_all_met
from engine.data import DataSplits, as_batches, load_data
from engine.distributed import Ranks, current
from engine.export_results import calibrated_slim, export_answer
from engine.greedy import GreedySlimmer
from engine.initial_weights import check_fits, read_state_dict, shapes_of
from engine.latency import LatencyTable, cached_table
from engine.latency_check import check_search, load_table_file
from engine.latency_runtimes import TorchRuntime
from engine.mutual_search import at_resolution, best_under, mutual_range, resized, score_mutual_points
from engine.progress import JobProgress
from engine.retrain import initial_model, retrain
from engine.sampling import default_resolutions
from engine.search_eta import SearchEta
from engine.spec import (
    BUDGET_KINDS,
    BudgetAnswer,
    CacheFolders,
    CancelFn,
    Cancelled,
    ReportFn,
    SearchResult,
    SearchSpec,
    SupernetRef,
    TrajectoryPoint,
    UniformPoint,
)
from engine.supernet_cache import fresh_supernet, obtain_supernet
from engine.train import load_supernet, pick_device
from engine.width_scores import baseline_ratios, score_uniform
from models import ChannelConfig, Supernet, count_macs, count_params

LATENCY_BATCH = 1
"""Without a named table, latency budgets are single-image inference latency on the worker's device."""


@dataclass
class _Answer:
    """A budget and the trajectory point chosen for it, on the network (resolution) it was found at."""

    budget: Budget
    net: Supernet
    point: TrajectoryPoint


def run_search(
    spec: SearchSpec | dict,
    workdir: Path,
    report: ReportFn | None = None,
    should_cancel: CancelFn | None = None,
    ranks: Ranks | None = None,
    caches: CacheFolders | None = None,
) -> dict[str, Any]:
    """Run (or resume) the search ``spec`` in ``workdir``; returns the result as JSON-able data:
    `engine.spec.SearchResult.to_dict()` (read it back with ``SearchResult.from_dict``), also
    written to ``workdir/result.json``.

    Supernets and latency tables are cached in ``caches`` (default: `CacheFolders.beside` the work
    directory).  Latency budgets are for the
    device of ``spec.latency_table`` (a file from `autoslim profile`, checked against the network
    and bins first) when one is named, else for the worker's own device, whose table is measured
    (and cached) either way.  Raises `BudgetError` for
    a budget the network cannot meet (before any training), `Cancelled` when ``should_cancel()``
    turns true (the work directory keeps everything done so far).  ``ranks`` defaults to the process
    group this process joined, if any; with several, only rank 0's ``report`` is called and a cancel
    seen by any rank's ``should_cancel`` stops them all.
    """
    spec = spec if isinstance(spec, SearchSpec) else SearchSpec.from_dict(spec)
    caches = caches or CacheFolders.beside(workdir)
    result = _Job(spec, Path(workdir), caches, report, should_cancel, ranks or current()).run()
    return {} if result is None else result.to_dict()


class _Job:
    def __init__(
        self,
        spec: SearchSpec,
        workdir: Path,
        caches: CacheFolders,
        report: ReportFn | None,
        should_cancel: CancelFn | None,
        ranks: Ranks,
    ) -> None:
        self.spec, self.workdir, self.caches, self.ranks = spec, workdir, caches, ranks
        self.own_cancel = should_cancel or (lambda: False)  # this rank's: training agrees on it itself
        self.cancel = ranks.agreed(self.own_cancel)  # collective until the search ends (every rank calls it)
        self.progress = JobProgress(report if ranks.is_main else None, retrain=spec.retrain.epochs > 0)
        self.timings: dict[str, float] = {}
        self.mutual = spec.train.mode == "mutual"
        self.spec_hash = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:24]
        self.named: LatencyTable | None = None  # the device table of spec.latency_table
        self.tables: dict[int, LatencyTable] = {}  # by resolution: the tables latency budgets are predicted with
        self.worker_tables: dict[int, LatencyTable] = {}  # by resolution: the worker's own device

    def run(self) -> SearchResult | None:
        """The result; None on the ranks other than 0, which stop once the search is done."""
        done = self._finished()
        if done is not None:
            return done
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._validate()
        data, budgets = self._prepare()
        entry = self._timed(
            "train_s",
            lambda: obtain_supernet(
                self.spec, data, self.caches.supernets, self.progress.sub("train"), self.own_cancel, self.ranks
            ),
        )
        if entry.reused:
            self.progress.skip_training()
        device = self.ranks.device(self.spec.device)
        supernet = load_supernet(entry.path, device)
        calib = as_batches(
            data.train_plain, self.spec.search.calib_size, self.spec.search.calib_batch_size, self.spec.seed, device
        )
        score = as_batches(
            data.val, self.spec.search.score_size, self.spec.search.calib_batch_size, self.spec.seed, device
        )
        if self.mutual and not self.ranks.is_main:
            return None  # the width x resolution points are few: rank 0 scores it alone
        search = self._mutual if self.mutual else self._greedy
        answers, trajectory, full = self._timed("search_s", lambda: search(supernet, calib, score, budgets, entry.key))
        if not self.ranks.is_main:
            return None
        self.cancel = self.own_cancel  # from here on rank 0 works alone
        uniform = [] if self.mutual else self._timed("search_s", lambda: _uniform_baseline(supernet, calib, score))
        tested = self._timed("retrain_s", lambda: self._retrain(supernet, data, calib, answers))
        results = self._timed("export_s", lambda: self._export(answers, tested, calib))
        self.timings["total_s"] = time.monotonic() - started
        result = SearchResult(
            budgets=results,
            trajectory=trajectory,
            full=full,
            uniform=uniform,
            supernet=SupernetRef(entry.key, str(entry.path), entry.reused),
            timings={k: round(v, 3) for k, v in self.timings.items()},
            spec=self.spec.to_dict(),
            spec_hash=self.spec_hash,
            ranks=self.ranks.world,
        )
        write_json(self.workdir / "result.json", result.to_dict(), indent=2)
        self.progress("done", 1.0)
        return result

    # ---- phases ---------------------------------------------------------------------------------
    def _finished(self) -> SearchResult | None:
        path = self.workdir / "result.json"
        if path.is_file():
            result = SearchResult.from_dict(json.loads(path.read_text()))
            if result.spec_hash == self.spec_hash:
                return result
        return None

    def _validate(self) -> None:
        if self.spec.train.mode == "snet":
            raise ValueError(
                "an S-Net supernet runs only at its switches and cannot be slimmed per layer; "
                "train it in usnet-nonuniform (AutoSlim), usnet or mutual mode"
            )
        if self.spec.train.teacher == "original" and not self.spec.weights:
            raise ValueError(
                "train.teacher 'original' distils from the network the supernet starts from: "
                "it needs trained weights (weights)"
            )
        if self.mutual and self.spec.retrain.epochs > 0:
            raise ValueError("MutualNet search picks (width, resolution) points of the trained supernet: no retraining")
        if self.spec.latency_table:
            if self.mutual:
                raise ValueError(
                    "a latency table describes one input size; a MutualNet search spans several "
                    "resolutions, so it predicts latency on the worker's device only"
                )
            self.named = load_table_file(self.spec.latency_table)  # a damaged file fails before any work
        check_targets(self.spec.macs, self.spec.latency_ms, self.spec.params)  # before the data are loaded

    def _budgets(self, full: dict[str, float], kinds: tuple[str, ...]) -> list[Budget]:
        """The spec's budgets of ``kinds``, shares taken of the ``full`` network's figures."""
        given = {kind: getattr(self.spec, kind) if kind in kinds else () for kind in BUDGET_KINDS}
        return budgets_of(**given, full=full) if any(given.values()) else []

    def _prepare(self) -> tuple[DataSplits, list[Budget]]:
        """Data, the budgets (resolved and checked), and the latency tables: everything before training."""
        self.progress("data", 0.0)
        with self.ranks.main_first():  # a dataset download or cache is made once
            data = self._timed(
                "data_s",
                lambda: load_data(
                    self.spec.dataset, self.spec.input_size, self.spec.search.val_fraction, self.spec.seed
                ),
            )
        untrained = fresh_supernet(self.spec, data)
        if self.spec.weights:  # a file that does not fit fails before any work
            check_fits(untrained.spec, shapes_of(read_state_dict(Path(self.spec.weights))))
        resolutions = self._resolutions()
        ranges = mutual_range(untrained, resolutions) if self.mutual else space_range(untrained.space)
        full: dict[str, float] = {kind: ranges[kind]["max"] for kind in ("macs", "params")}
        check_budgets(self._budgets(full, ("macs", "params")), ranges)
        if self.named is not None:
            check_search(self.named, untrained.spec, self.spec.search.bins)
        self._check_cancel("before measuring latency")
        with self.ranks.main_first():  # rank 0 measures, the others read the cached tables
            self.worker_tables = self._timed("latency_s", lambda: self._latency_tables(untrained, resolutions))
        self.tables = {self.spec.input_size: self.named} if self.named else self.worker_tables
        estimates = [
            (t.predict(net.space.smallest()), t.predict(net.space.full()))
            for r, t in self.tables.items()
            for net in [at_resolution(untrained, r)]
        ]
        ranges["latency_ms"] = {"min": min(lo for lo, _ in estimates), "max": max(hi for _, hi in estimates)}
        full["latency_ms"] = ranges["latency_ms"]["max"]
        check_budgets(self._budgets(full, ("latency_ms",)), ranges)
        self._check_cancel("before training")
        return data, self._budgets(full, BUDGET_KINDS)

    def _resolutions(self) -> list[int]:
        if not self.mutual:
            return [self.spec.input_size]
        return sorted(self.spec.train.resolutions or default_resolutions(self.spec.input_size), reverse=True)

    def _latency_tables(self, untrained: Supernet, resolutions: list[int]) -> dict[int, LatencyTable]:
        root, runtime = self.caches.latency, TorchRuntime(pick_device(self.spec.device))
        tables = {}
        for i, resolution in enumerate(resolutions):
            on = lambda f, i=i: self.progress("data", 0.5 + 0.5 * (i + f) / len(resolutions), detail="latency table")  # noqa: E731
            tables[resolution], _ = cached_table(
                at_resolution(untrained, resolution), root, runtime, LATENCY_BATCH, self.spec.search.bins, progress=on
            )
        return tables

    def _greedy(
        self, supernet: Supernet, calib, score, budgets: list[Budget], supernet_key: str
    ) -> tuple[list[_Answer], list[TrajectoryPoint], TrajectoryPoint]:
        table = self.tables[self.spec.input_size]
        knobs = self.spec.search
        slimmer = GreedySlimmer(
            supernet,
            calib,
            score,
            knobs.bins,
            latency=table.predict,
            budgets=budgets,
            bins_per_step=knobs.bins_per_step,
            race_fraction=knobs.race_fraction,
            race_z=knobs.race_z,
            channels_last=knobs.channels_last,
            ranks=self.ranks,
            criterion=knobs.criterion,
        )
        state_key = _hash(
            {
                "supernet": supernet_key,
                "search": asdict(self.spec.search),
                "seed": self.spec.seed,
                "latency": table.key,
                "latency_fit": [table.scale, table.overhead_ms],
                "device": self.spec.device,
            }
        )
        space, full = supernet.space, supernet.space.full()
        track = _search_fraction(
            budgets,
            {"macs": count_macs(space, full), "params": count_params(space, full), "latency_ms": table.predict(full)},
        )

        eta = SearchEta(budgets, slimmer.full_cost, slimmer.bins_this_step)

        def on_step(step) -> None:
            self.progress(
                "search",
                track(step),
                trajectory_step=step.to_dict(space),
                steps_done=step.index,
                eta_s=eta.update(step),
            )

        steps = slimmer.run(until_all_met(budgets), self.workdir / "search_state.json", state_key, self.cancel, on_step)
        trajectory = [TrajectoryPoint.from_dict(s.to_dict(space)) for s in steps]
        if knobs.fill and self.ranks.is_main:  # the other ranks return after the search
            fills = [
                fill_budget(supernet, calib, score, first_fit(steps, b), b, slimmer.cost, knobs.criterion)
                for b in budgets
            ]
            chosen = [TrajectoryPoint.from_dict(step.to_dict(space)) for step in fills]
        else:
            chosen = [first_fit(trajectory, b) for b in budgets]
        answers = [_Answer(b, supernet, point) for b, point in zip(budgets, chosen)]
        return answers, trajectory, trajectory[0]

    def _mutual(
        self, supernet: Supernet, calib, score, budgets: list[Budget], supernet_key: str
    ) -> tuple[list[_Answer], list[TrajectoryPoint], TrajectoryPoint]:
        nets = {r: at_resolution(supernet, r) for r in self._resolutions()}
        latency = lambda r, widths: self.tables[r].predict(widths)  # noqa: E731
        points = score_mutual_points(
            supernet,
            calib,
            score,
            list(nets),
            latency,
            self.cancel,
            lambda p, f: self.progress("search", f, trajectory_step=p.to_dict()),
        )
        answers = []
        for budget in budgets:
            best = best_under(points, budget)
            if best is None:
                raise ValueError(f"no (width, resolution) point fits {budget.describe()}")
            assert best.resolution is not None  # a width x resolution point
            answers.append(_Answer(budget, nets[best.resolution], best))
        return answers, points, max(points, key=lambda p: p.macs)

    def _retrain(self, supernet: Supernet, data: DataSplits, calib, answers: list[_Answer]) -> dict[str, dict]:
        """Retrained models by budget label (resumable: each finished one is kept in the work directory)."""
        out: dict[str, dict[str, Any]] = {}
        settings = self.spec.retrain
        if settings.epochs < 1:
            return out
        for i, answer in enumerate(answers):
            folder = self.workdir / "retrain" / answer.budget.label
            if not (folder / "retrain.json").is_file():
                self._check_cancel("before retraining")
                config = ChannelConfig.from_widths(supernet, answer.point.widths)
                model = initial_model(config, None if settings.from_scratch else supernet, calib, self.spec.seed)
                sub = self.progress.sub("retrain", i / len(answers), 1 / len(answers))
                done = retrain(
                    model,
                    data,
                    self.spec.train,
                    settings.epochs,
                    settings.lr,
                    fine_tune=not settings.from_scratch,
                    seed=self.spec.seed,
                    device=self.spec.device,
                    report=sub,
                    should_cancel=self.cancel,
                )
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(done.model, folder / "model.pt")
                write_json(folder / "retrain.json", done.record(settings.epochs, settings.from_scratch), indent=2)
            out[answer.budget.label] = {
                **json.loads((folder / "retrain.json").read_text()),
                "model": folder / "model.pt",
            }
        return out

    def _export(self, answers: list[_Answer], tested: dict[str, dict], calib) -> list[BudgetAnswer]:
        results = []
        for i, answer in enumerate(answers):
            self._check_cancel("before export")
            budget, net, point = answer.budget, answer.net, answer.point
            retrained = tested.get(budget.label)
            model = (
                _load_module(retrained["model"])
                if retrained
                else calibrated_slim(net, point.widths, resized(calib, net.spec.input_size))
            )
            figures = _figures(point)
            if retrained:
                figures["test_accuracy"] = retrained["test_accuracy"]
            figures.update(self._latency_figures(net, point.widths))
            files = export_answer(
                net,
                point.widths,
                self.workdir / "budgets" / budget.label,
                self.workdir,
                self.spec.export_formats,
                model,
                figures.get("test_accuracy", point.val_accuracy),
                budget={"kind": budget.kind, "target": budget.target},
                **figures,
            )
            results.append(
                BudgetAnswer(
                    kind=budget.kind,
                    target=budget.target,
                    macs=point.macs,
                    params=point.params,
                    channels=net.space.to_layers(point.widths),
                    files=files,
                    **figures,
                )
            )
            self.progress("export", (i + 1) / len(answers))
        return results

    def _latency_figures(self, net: Supernet, widths: dict[str, int]) -> dict[str, Any]:
        """Which device and runtime ``latency_ms`` is for; with a named table, the worker's own figure too."""
        resolution = net.spec.input_size
        figures = latency_figures(self.tables[resolution], widths)
        if self.named is not None:
            figures.update(latency_figures(self.worker_tables[resolution], widths, "worker_"))
        return figures

    # ---- helpers --------------------------------------------------------------------------------
    def _timed(self, name: str, work: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            return work()
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - started

    def _check_cancel(self, where: str) -> None:
        if self.cancel():
            raise Cancelled(f"search cancelled {where}")


def _uniform_baseline(supernet: Supernet, calib, score) -> list[UniformPoint]:
    """The supernet at evenly spaced uniform width ratios, BN calibrated and scored like the greedy
    candidates: the width-multiplier baseline the trajectory is drawn against."""
    space = supernet.space
    return [
        UniformPoint(
            ratio=row.ratio,
            macs=row.macs,
            params=count_params(space, space.uniform(row.ratio)),
            val_accuracy=row.score.accuracy,
            val_loss=row.score.loss,
        )
        for row in score_uniform(supernet, baseline_ratios(supernet), score, calib)
    ]


def latency_figures(table: LatencyTable, widths: dict[str, int], prefix: str = "") -> dict[str, Any]:
    """``{prefix}latency_ms`` predicted by ``table``, with the device and runtime it is a figure of beside it."""
    return {
        f"{prefix}latency_ms": round(table.predict(widths), 6),
        **{f"{prefix}latency_{k}": v for k, v in table.describe().items()},
    }


def _figures(point: TrajectoryPoint) -> dict[str, Any]:
    """The figures of a chosen point that its answer and config file carry: the greedy step it is, or
    which width x resolution point it is."""
    where = {"ratio": point.ratio, "resolution": point.resolution} if point.is_mutual else {"step": point.index}
    return {"latency_ms": point.latency_ms, "val_accuracy": point.val_accuracy, "val_loss": point.val_loss, **where}


def _search_fraction(budgets: list[Budget], full: dict[str, float]) -> Callable[[Any], float]:
    """How far a greedy step is toward meeting every budget (each in its own metric, from ``full``)."""

    def fraction(step) -> float:
        parts = []
        for b in budgets:
            now = b.value(step) or 0.0
            parts.append(
                1.0 if now <= b.target else max(0.0, (full[b.kind] - now) / max(full[b.kind] - b.target, 1e-12))
            )
        return min(parts)

    return fraction


def _hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _load_module(path: Path) -> torch.nn.Module:
    return torch.load(path, map_location="cpu", weights_only=False).eval()
