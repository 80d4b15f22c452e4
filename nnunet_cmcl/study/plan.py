"""The runs of a study: arms x label regimes x training seeds, as nnU-Net folds.

- An arm is a segmentation trainer, started from random weights or from the final checkpoint of a pretraining
  trainer. Every arm has its own trainer, hence its own results folder.
- A label regime is a label-fraction fold of a source fold (``splits``): fewer labeled training cases, the same
  validation cases. Fraction 1 is the source fold itself. An arm trains at every regime, or at those its
  ``labeled`` names.
- A training seed gives every fold a repeat in splits_final.json (``splits.add_train_seed_folds``), which the
  trainers read (``seeding``). Without seeds the folds run unseeded, as nnU-Net runs them.
- Pretraining runs per source fold and seed on that fold's training images (all of them, labeled or not), so it
  never sees the images it is validated on (its retrieval monitor runs on them without gradients, and the
  fine-tuning starts from the final checkpoint, not from the monitor's best).

Runs are ordered seed by seed, so the first seed's complete table exists long before the last seed's runs end;
within a seed, the arms from random weights come first, and each pretraining right before the runs that start
from it.
"""
from __future__ import annotations

from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_cmcl.errors import CMCLInputError
from nnunet_cmcl.naming import find_trainer_class, trainer_folder
from nnunet_cmcl.study.splits import write_label_fraction_folds, write_train_seed_folds


@dataclass(frozen=True)
class Arm:
    """One line of the study's table: a segmentation trainer, from random weights or from a pretraining."""
    label: str
    trainer: str
    pretrainer: str | None = None
    # the label of the arm the table pairs this arm with besides the first: the one that trains its schedule from
    # random weights (the difference is the pretrained weights' alone), or the default it is an alternative to (the
    # difference is the change's). None: the first arm only
    control: str | None = None
    # the plans identifier the pretraining trains with, e.g. the plans `write_pretraining_plans` sized for its step
    # (a reconstructing step holds more than the vanilla one); None: the study's plans
    pretraining_plans: str | None = None
    # the label regimes (numbers of labeled cases) the arm trains at; empty: every regime of the study. An arm
    # left out of a regime is absent from its table, and the paired statistics need no change for it
    labeled: tuple[int, ...] = ()


@dataclass
class Run:
    """One nnUNetv2_train call of the study; segmentation runs also say what the tables pair them by."""
    label: str
    trainer: str
    fold: str
    fold_folder: str
    pretrained: str | None = None
    arm: str | None = None
    source_fold: int | None = None
    fraction: float | None = None
    n_labeled: int | None = None
    seed: int | None = None
    dataset: str | None = None  # where the run trains, when not the study's dataset (a pretraining pool)
    plans: str | None = None  # the plans identifier it trains with, when not the study's (a pretraining's own)

    @property
    def kind(self) -> str:
        """"segmentation" for a run of an arm, "pretraining" for the run whose checkpoint arms start from."""
        return "pretraining" if self.arm is None else "segmentation"

    @property
    def done_file(self) -> str:
        """Exists once the run is complete (pretraining has no segmentation validation)."""
        if self.kind == "pretraining":
            return join(self.fold_folder, "checkpoint_final.pth")
        return join(self.fold_folder, "validation", "summary.json")

    def record(self) -> dict:
        """What the study's statistics read of a segmentation run."""
        return {"arm": self.arm, "trainer": self.trainer, "fold": int(self.fold), "source_fold": self.source_fold,
                "fraction": self.fraction, "n_labeled": self.n_labeled, "seed": self.seed}


def ensure_splits(name: str, configuration: str, plans: str) -> None:
    """Writes nnU-Net's default 5-fold split (what its do_split would write: seed 12345) if there is none yet."""
    splits_file = join(nnUNet_preprocessed, name, "splits_final.json")
    if not isfile(splits_file):
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        identifier = load_json(join(nnUNet_preprocessed, name, plans + ".json"))["configurations"][configuration][
            "data_identifier"]
        folder = join(nnUNet_preprocessed, name, identifier)
        identifiers = sorted(infer_dataset_class(folder).get_identifiers(folder))
        save_json(generate_crossval_split(identifiers, seed=12345, n_splits=5), splits_file)


def fraction_folds(name: str, folds: list[int], fractions: list[float], seed: int) -> dict[tuple[int, float], int]:
    """(source fold, fraction) -> fold index in splits_final.json; fraction 1.0 is the source fold itself."""
    mapping = {(f, 1.0): f for f in folds if 1.0 in fractions}
    partial = [x for x in fractions if x < 1.0]
    if partial:
        for d in write_label_fraction_folds(join(nnUNet_preprocessed, name), partial, seed, folds):
            mapping[(d["source_fold"], d["fraction"])] = d["fold"]
    return mapping


def labeled_fractions(name: str, folds: list[int], labeled: list[int]) -> list[float]:
    """Numbers of labeled cases -> the fractions of the source folds' training cases that keep exactly them
    (``splits.subset_size`` rounds fraction x n back to the number). The folds must have equally many."""
    splits = load_json(join(nnUNet_preprocessed, name, "splits_final.json"))
    sizes = {len(splits[f]["train"]) for f in folds}
    if len(sizes) != 1:
        raise CMCLInputError(f"folds {folds} have different numbers of training cases ({sorted(sizes)}); give "
                             f"--fractions instead of --labeled, or folds of equal size")
    n = sizes.pop()
    bad = [k for k in labeled if not 0 < k <= n]
    if bad:
        raise CMCLInputError(f"--labeled {bad}: a fold has {n} training cases; give numbers from 1 to {n}")
    return [k / n if k < n else 1.0 for k in labeled]


def check_arms(arms: list[Arm], train_seeds: list[int] | None) -> None:
    """One trainer per arm (else two arms would share a results folder); with seeds, trainers that read them."""
    labels, trainers = [a.label for a in arms], [a.trainer for a in arms]
    for values, what in ((labels, "label"), (trainers, "trainer")):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise CMCLInputError(f"arms share the {what} {', '.join(twice)}; every arm needs its own {what} (a "
                                 f"trainer is a results folder: subclass it under another name)")
    for name in dict.fromkeys(trainers + [a.pretrainer for a in arms if a.pretrainer]):
        cls = find_trainer_class(name)
        if cls is None:
            raise CMCLInputError(f"trainer {name} was not found among nnU-Net's, nnunet-cmcl's and nnUNet_extTrainer's "
                                 f"trainers; check the name (`nnunet-cmcl trainers` lists the shipped ones)")
        if train_seeds and not getattr(cls, "reads_train_seed", False):
            raise CMCLInputError(f"{name} does not read training seeds, so its repeats would not be seeded; use "
                                 f"nnUNetTrainerSeeded for nnU-Net's default trainer, or add "
                                 f"nnunet_cmcl.seeding.SeededTraining to its bases")


def _seed_text(seed: int | None) -> str:
    return "" if seed is None else f", seed {seed}"


def _repeats(name: str, folds: set[int], train_seeds: list[int] | None) -> dict:
    """{(fold, seed): fold index}: the seeded repeats of ``folds`` in the dataset's splits, or the folds."""
    if not train_seeds:
        return {(f, None): f for f in folds}
    return write_train_seed_folds(join(nnUNet_preprocessed, name), sorted(folds), train_seeds)


def plan_runs(name: str, configuration: str, plans: str, folds: list[int], fractions: list[float], seed: int,
              arms: list[Arm], train_seeds: list[int] | None = None, pool: str | None = None,
              labels_per_seed: bool = False) -> list[Run]:
    """The runs of the study in order: per training seed, the arms from random weights on every regime, then each
    pretraining followed by the runs of the arms that start from it (by regime).

    ``pool``: pretrain on that dataset instead (prepared with the study dataset's plans by `prepare`); its fold k
    must hold the unlabeled pool plus the training images of the study's fold k, and none of its validation
    images. ``labels_per_seed``: training seed s draws its own labeled subsets (label seed ``seed + s``), so the
    study's seeds resample which cases are labeled too; every arm of one seed shares them (the pairing holds).
    Else every seed trains on the subsets of ``seed``."""
    check_arms(arms, train_seeds)

    def folder(trainer: str, fold: int, dataset: str = name, plans_identifier: str = plans) -> str:
        return join(trainer_folder(join(nnUNet_results, dataset), trainer, plans_identifier, configuration),
                    f"fold_{fold}")

    ensure_splits(name, configuration, plans)
    seeds: list[int | None] = list(dict.fromkeys(train_seeds)) if train_seeds else [None]
    if labels_per_seed and not train_seeds:
        raise CMCLInputError("labels_per_seed draws a labeled subset per training seed; give train_seeds too")
    regimes = {s: fraction_folds(name, folds, fractions, seed + s if labels_per_seed else seed) for s in seeds}
    if labels_per_seed:  # seed s repeats its own regimes only
        repeat = {}
        for s in seeds:
            repeat.update(_repeats(name, set(folds) | set(regimes[s].values()), [s]))
    else:
        repeat = _repeats(name, set(folds) | set(regimes[seeds[0]].values()), train_seeds)
    pool_repeat = _repeats(pool, set(folds), train_seeds) if pool else repeat
    splits = load_json(join(nnUNet_preprocessed, name, "splits_final.json"))
    # a pretraining is a trainer with its plans: arms that share both share the run
    pretrainers = list(dict.fromkeys((a.pretrainer, a.pretraining_plans) for a in arms if a.pretrainer))
    trained = {len(splits[f]["train"]) for r in regimes.values() for f in r.values()}
    unknown = sorted({k for a in arms for k in a.labeled} - trained)
    if unknown:
        raise CMCLInputError(f"arms name label regimes {unknown} the study does not train; give numbers of labeled "
                             f"cases among its regimes")
    runs = []
    for s in seeds:
        pretrained, pretrainings, segmentation = {}, [], []
        for pretrainer, pretraining_plans in pretrainers:
            for source in folds:
                fold = pool_repeat[(source, s)]
                images = f"the pool {pool} and " if pool else ""
                run = Run(f"pretraining on {images}the training images of fold {source}{_seed_text(s)} (fold {fold})",
                          pretrainer, str(fold), folder(pretrainer, fold, pool or name, pretraining_plans or plans),
                          dataset=pool, plans=pretraining_plans)
                pretrained[(pretrainer, pretraining_plans, source)] = run.done_file
                pretrainings.append(run)
        for (source, fraction), regime_fold in sorted(regimes[s].items()):
            fold = repeat[(regime_fold, s)]
            n_labeled = len(splits[regime_fold]["train"])
            for arm in (a for a in arms if not a.labeled or n_labeled in a.labeled):
                segmentation.append(Run(f"{arm.label}, fold {source} with {n_labeled} labeled cases{_seed_text(s)} (fold "
                                f"{fold})", arm.trainer, str(fold), folder(arm.trainer, fold),
                                pretrained[(arm.pretrainer, arm.pretraining_plans, source)] if arm.pretrainer else None,
                                arm.label, source, fraction, n_labeled, s))
        # the arms from random weights first, then each pretraining right before the runs that start from it, so
        # its checkpoint is needed for hours, not for the whole seed (a study that moves machines trains it again
        # only if one of them is unfinished: ledger.py)
        runs += [r for r in segmentation if r.pretrained is None]
        for pretraining in pretrainings:
            runs += [pretraining] + [r for r in segmentation if r.pretrained == pretraining.done_file]
    return runs
