"""Filter pruning (HFP), channel planting (PLANT) and structure learning (LSDNN) on Fashion-MNIST.

Each part against the target of its paper (docs/methods.md); each part's protocol and the verdicts:
docs/benchmarks/suite.md, "Filter pruning, channel planting and structure learning". ``--parts``
runs some of them, ``--profile`` applies named overrides of the full settings (:data:`PROFILES`);
both name the results file.

    python -m benchmarks.pruning_planting_fashion            # full run (86 min measured on 2 cores)
    python -m benchmarks.pruning_planting_fashion --quick    # smoke run on a few hundred images
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.harness import (accuracy, kd_targets, load, plain_copy, publish, render, timed,  # noqa: E402
                                train, verdict)
from benchmarks.suite import models  # noqa: E402
from tf_groupsparse.metrics import count_params, flops  # noqa: E402
from tf_groupsparse.pruning.planting import plant  # noqa: E402
from tf_groupsparse import prune_filters  # noqa: E402
from tf_groupsparse import regularize  # noqa: E402
from tf_groupsparse.regularizers import HierarchicalGroupSparse  # noqa: E402
from tf_groupsparse.pruning.structure import build_model, learn_structure  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

#: Settings of the full run; ``--quick`` overrides them with QUICK.
FULL = {
    "train_samples": None, "test_samples": None, "batch_size": 128, "learning_rate": 1e-3, "seed": 0,  # None: all
    # part 1
    "resnet_widths": [16, 32, 64], "resnet_epochs": 10, "hgsr_strength": 5e-5, "candidates": "consumer_norm",
    "tolerances": [0.02, 0.05, 0.1, 0.2], "prune_samples": 512, "fine_tune_epochs": 2,
    "fine_tune_learning_rate": 3e-4, "target_removed_fraction": 0.5, "target_drop_points": 0.5,
    # part 2; planting stops at the teacher's validation accuracy - plant_target_margin; plant_kd_epochs > 0:
    # the whole planted model (and the scratch one) distilled afterwards
    "validation_samples": 6000, "teacher_widths": [1000, 500], "mlp_epochs": 10, "student_widths": [64, 32],
    "channels_per_step": 32, "plant_steps": 8, "epochs_per_step": 2, "param_budget_fraction": 0.15,
    "plant_target_margin": 0.005, "plant_kd_epochs": 0, "plant_kd_learning_rate": 3e-4, "target_gap_points": 1.0,
    # part 3
    "structure_samples": 10000, "structure_width": 64, "structure_max_depth": 4, "structure_epochs": 50,
    "structure_group_strength": 3e-2, "structure_entropy_tol": 0.05, "structure_train_epochs": 10,
    "structure_seeds": [0, 1, 2],
}
QUICK = {  # one epoch on 600 images leaves the ResNet at chance (allow_untrained): a smoke run only
    "train_samples": 600, "test_samples": 300, "resnet_widths": [4, 8, 16], "resnet_epochs": 1,
    "tolerances": [0.02, 0.1], "prune_samples": 128, "fine_tune_epochs": 1, "validation_samples": 150,
    "teacher_widths": [64, 32], "mlp_epochs": 1, "student_widths": [8, 4], "channels_per_step": 4, "plant_steps": 2,
    "epochs_per_step": 1, "structure_samples": 300, "structure_width": 8, "structure_max_depth": 2,
    "structure_epochs": 2, "structure_train_epochs": 1, "structure_seeds": [0], "allow_untrained": True,
}
#: Named overrides of FULL (``--profile``), recorded in the results file's name and settings.
PROFILES = {
    # planting from a 1/8-width student (the suite's setting) with a few large steps, then the
    # whole planted network distilled from the teacher (every parameter trainable): what a user
    # does after planting; the scratch architecture gets the same distillation epochs
    "kd": {"student_widths": [128, 64], "plant_steps": 3, "epochs_per_step": 2, "plant_kd_epochs": 5},
    # (chosen after the two above) the same, planted until the 15% budget stops it and distilled
    # twice as long: does the rest of the budget close the gap?
    "kd_budget": {"student_widths": [128, 64], "plant_steps": 8, "epochs_per_step": 2, "plant_kd_epochs": 10},
}


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def resnet(widths, input_shape=(28, 28, 1), seed=0, arch="resnet"):
    """The suite's small ResNet (stem conv-BN-ReLU, one basic block per width, GAP, Dense), or its MLP."""
    return models.build(keras, models.spec(arch, widths, input_shape), seed)


def mlp(widths, input_shape=(28, 28, 1), seed=0):
    return resnet(widths, input_shape, seed, "mlp")


def hgsr_layers(model):
    """Layers that carry the HGSR penalty: every 3x3 conv but the stem (whose input group is the
    image itself), no 1x1 shortcut conv (the HGSR reference setting)."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
            and layer.name != "stem_conv" and tuple(layer.kernel_size) != (1, 1)]


def fit(model, x, y, epochs, cfg, seed=None, learning_rate=None):
    """:func:`harness.train` (Adam, cosine decay to 0) at the settings' batch size; returns seconds."""
    return train(model, x, y, epochs=epochs, batch_size=cfg["batch_size"], seed=cfg["seed"] if seed is None else seed,
                 learning_rate=cfg["learning_rate"] if learning_rate is None else learning_rate)


def distill(model, teacher, x, y, cfg):
    """A copy of `model` (without penalties) fitted on ``distillation_loss`` (T = 4, alpha = 0.5)
    against `teacher`'s logits for ``plant_kd_epochs`` epochs from ``plant_kd_learning_rate``;
    returns (the copy, seconds spent)."""
    model = plain_copy(model)
    packed, loss = kd_targets(y, teacher.predict(x, batch_size=1024, verbose=0))
    return model, train(model, x, packed, epochs=cfg["plant_kd_epochs"], batch_size=cfg["batch_size"], loss=loss,
                        metrics=(), learning_rate=cfg["plant_kd_learning_rate"], seed=cfg["seed"])


def equal_param_widths(target, input_dim, depth, classes=10):
    """Widths ``[h] * depth`` of the MLP ``input_dim-h-...-h-classes`` whose parameter count is
    closest to `target`; returns (widths, params)."""

    def params(h):
        return input_dim * h + h + (depth - 1) * (h * h + h) + h * classes + classes

    best = min(range(1, 4097), key=lambda h: (abs(params(h) - target), h))
    return [best] * depth, params(best)


def pct(part, whole):
    return 100.0 * part / whole


def select_tolerance(rows, fraction):
    """Index of the smallest tolerance whose removal reaches `fraction` of the parameters, else
    of the largest tolerance (the choice looks at parameter counts only, never at test data)."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["tolerance"])
    return next((i for i in order if rows[i]["params_removed_%"] >= 100 * fraction), order[-1])


def part_pruning(data, cfg):
    (x, y), (xt, yt) = data
    out = {"setting": {k: cfg[k] for k in ("resnet_widths", "resnet_epochs", "hgsr_strength", "candidates",
                                            "tolerances", "prune_samples", "fine_tune_epochs",
                                            "fine_tune_learning_rate", "batch_size", "learning_rate")}}
    for key, reg in (("dense", None), ("hgsr", HierarchicalGroupSparse.squared_group_l12(cfg["hgsr_strength"],
                                                                                      l1_mix=0.5))):
        log(f"part 1: {key} ResNet", cfg["resnet_widths"], f"{cfg['resnet_epochs']} epochs")
        model = resnet(cfg["resnet_widths"], seed=cfg["seed"])
        names = hgsr_layers(model)
        model = model if reg is None else regularize(model, reg, layers=names)
        seconds = fit(model, x, y, cfg["resnet_epochs"], cfg)
        hgsr = plain_copy(model)  # the loss-increase search and the fine-tuning use the plain loss
        out[key] = {"params": count_params(hgsr), "macs": flops(hgsr), "test_acc": accuracy(hgsr, xt, yt),
                    "train_s": seconds, **({} if reg is None else {"penalized_layers": names})}
        log(f"  {key} test accuracy", f"{out[key]['test_acc']:.4f}", f"({seconds:.0f} s)")

    rows = []
    for tolerance in cfg["tolerances"]:
        (pruned, report), search_s = timed(
            prune_filters, hgsr, (x, y), loss=LOSS, samples=cfg["prune_samples"], tolerance=tolerance,
            candidates=cfg["candidates"], random_state=cfg["seed"], verbose=0,
            allow_untrained=cfg.get("allow_untrained", False))
        # fine-tune a copy (what prune_filters' fine_tune option does, done here so that the
        # accuracy right after removal is measured too without a second search)
        tuned = plain_copy(pruned)
        tune_s = fit(tuned, x, y, cfg["fine_tune_epochs"], cfg, learning_rate=cfg["fine_tune_learning_rate"])
        t = report.totals
        row = {"tolerance": tolerance,
               "filters": " / ".join(f"{r['filters_before']}->{r['filters_after']}" for r in report.rows),
               "params_before": t["params_before"], "params_after": t["params_after"],
               "params_removed_%": pct(t["params_removed"], t["params_before"]),
               "macs_removed_%": pct(t["macs_removed"], t["macs_before"]), "loss_increase": t["loss_increase"],
               "test_acc_pruned": accuracy(pruned, xt, yt), "test_acc_fine_tuned": accuracy(tuned, xt, yt),
               "search_s": search_s, "fine_tune_s": tune_s}
        row["drop_points"] = 100.0 * (out["hgsr"]["test_acc"] - row["test_acc_fine_tuned"])
        rows.append(row)
        log(f"  tolerance {tolerance}: {row['params_removed_%']:.1f}% params removed, test acc "
            f"{row['test_acc_pruned']:.4f} pruned, {row['test_acc_fine_tuned']:.4f} fine-tuned "
            f"(search {search_s:.0f} s, fine-tuning {tune_s:.0f} s)")
    out["sweep"], out["selected"] = rows, select_tolerance(rows, cfg["target_removed_fraction"])
    sel = rows[out["selected"]]
    out["target_met"] = bool(sel["params_removed_%"] >= 100 * cfg["target_removed_fraction"]
                             and sel["drop_points"] <= cfg["target_drop_points"])
    return out


def part_planting(data, cfg):
    (x, y), (xt, yt) = data
    n_val = cfg["validation_samples"]
    xtr, ytr, xv, yv = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    log("part 2: teacher MLP", cfg["teacher_widths"], f"{cfg['mlp_epochs']} epochs on {len(xtr)} images")
    teacher = mlp(cfg["teacher_widths"], seed=cfg["seed"])
    teacher_s = fit(teacher, xtr, ytr, cfg["mlp_epochs"], cfg)
    teacher_params, teacher_val = count_params(teacher), accuracy(teacher, xv, yv)
    budget = int(cfg["param_budget_fraction"] * teacher_params)
    target = teacher_val - cfg["plant_target_margin"]
    log(f"  teacher: {teacher_params} params, val {teacher_val:.4f}, budget {budget}, stop at val {target:.4f}")

    student = mlp(cfg["student_widths"], seed=cfg["seed"])
    fit(student, xtr, ytr, cfg["mlp_epochs"], cfg)
    keras.utils.set_random_seed(cfg["seed"])
    (grown, report), plant_s = timed(
        plant, student, teacher, (xtr, ytr), validation_data=(xv, yv), channels_per_step=cfg["channels_per_step"],
        max_steps=cfg["plant_steps"], epochs_per_step=cfg["epochs_per_step"], target_accuracy=target,
        param_budget=budget, learning_rate=cfg["learning_rate"], batch_size=cfg["batch_size"], verbose=0)
    widths = [grown.get_layer(f"fc{i}").units for i in range(1, len(cfg["student_widths"]) + 1)]
    log(f"  planted widths {widths}, {count_params(grown)} params ({plant_s:.0f} s)")
    scratch = mlp(widths, seed=cfg["seed"])
    fit(scratch, xtr, ytr, cfg["mlp_epochs"], cfg)
    planted_acc, scratch_acc = accuracy(grown, xt, yt), accuracy(scratch, xt, yt)
    kd = {}
    if cfg["plant_kd_epochs"]:
        grown_kd, kd["planted_kd_s"] = distill(grown, teacher, xtr, ytr, cfg)
        scratch_kd, _ = distill(scratch, teacher, xtr, ytr, cfg)
        kd["planted_kd_test_acc"], kd["scratch_kd_test_acc"] = accuracy(grown_kd, xt, yt), accuracy(scratch_kd, xt, yt)
        log(f"  distilled {cfg['plant_kd_epochs']} epochs: planted {planted_acc:.4f} -> {kd['planted_kd_test_acc']:.4f}, "
            f"scratch {scratch_acc:.4f} -> {kd['scratch_kd_test_acc']:.4f}")
    out = {"setting": {k: cfg[k] for k in ("teacher_widths", "mlp_epochs", "student_widths", "channels_per_step",
                                           "plant_steps", "epochs_per_step", "param_budget_fraction",
                                           "plant_target_margin", "plant_kd_epochs", "plant_kd_learning_rate",
                                           "validation_samples")},
           "train_images": len(xtr), "teacher_params": teacher_params, "teacher_val_acc": teacher_val,
           "teacher_test_acc": accuracy(teacher, xt, yt), "teacher_train_s": teacher_s, "param_budget": budget,
           "stop_val_accuracy": target, "student_widths": list(cfg["student_widths"]),
           "student_params": count_params(student), "student_test_acc": accuracy(student, xt, yt),
           "planted_widths": widths, "planted_params": count_params(grown),
           "planted_params_%_of_teacher": pct(count_params(grown), teacher_params),
           "planted_val_acc": accuracy(grown, xv, yv), "planted_test_acc": planted_acc, "scratch_test_acc": scratch_acc,
           "stopped_by": report.totals["stopped_by"], "plant_s": plant_s,
           "steps": [{k: row[k] for k in ("step", "layer", "channels", "params", "accuracy")} for row in report.rows],
           "candidates": report.meta["candidates"], **kd}
    # the verdict is on the final model: the planted one, distilled when plant_kd_epochs > 0
    out["final_test_acc"] = out.get("planted_kd_test_acc", planted_acc)
    out["gap_points"] = 100.0 * (out["teacher_test_acc"] - out["final_test_acc"])
    out["target_met"] = bool(out["gap_points"] <= cfg["target_gap_points"]
                             and out["planted_params"] <= cfg["param_budget_fraction"] * teacher_params)
    log(f"  teacher test {out['teacher_test_acc']:.4f}, planted {planted_acc:.4f}, scratch {scratch_acc:.4f}")
    return out


def part_structure(data, cfg):
    (x, y), (xt, yt) = data
    xf, xtf = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    n = min(cfg["structure_samples"], len(xf))
    log(f"part 3: learn_structure on {n} unlabeled images, width {cfg['structure_width']}")
    structure, learn_s = timed(
        learn_structure, xf[:n], max_depth=cfg["structure_max_depth"], width=cfg["structure_width"],
        group_strength=cfg["structure_group_strength"], entropy_tol=cfg["structure_entropy_tol"],
        epochs=cfg["structure_epochs"], batch_size=256, random_state=cfg["seed"], verbose=0)
    log("  " + str(structure).replace("\n", "\n  "), f"({learn_s:.0f} s)")
    learned_params = count_params(build_model(structure, 10))
    # baselines: plain MLPs with equal hidden widths and the closest parameter count, of the
    # learned depth and one layer deeper (at depth 1 the first one is the learned architecture)
    baselines = {}
    for depth in (structure.depth, structure.depth + 1):
        widths, params = equal_param_widths(learned_params, xf.shape[1], depth)
        baselines[f"mlp_{'-'.join(map(str, widths))}"] = {"widths": widths, "params": params}
    models_ = {"learned": None, **{k: v["widths"] for k, v in baselines.items()}}
    runs = []
    for seed in cfg["structure_seeds"]:
        run = {"seed": seed}
        for key, widths in models_.items():
            if widths is None:
                keras.utils.set_random_seed(seed)
                model = build_model(structure, 10)
            else:
                model = mlp(widths, input_shape=(xf.shape[1],), seed=seed)
            fit(model, xf, y, cfg["structure_train_epochs"], cfg, seed=seed)
            run[key] = accuracy(model, xtf, yt)
        runs.append(run)
        log(f"  seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in run.items() if k != "seed"))
    return {"setting": {k: v for k, v in cfg.items() if k.startswith("structure_")},
            "structure": structure.to_dict(),
            "connected_units": [{("input" if s == 0 else f"layer{s}"): len(u) for s, u in units.items()}
                                for units in structure.unit_connections],
            "learn_s": learn_s, "learned_params": learned_params, "baselines": baselines, "runs": runs,
            "test_acc_mean": {k: float(np.mean([r[k] for r in runs])) for k in models_}}


def markdown(results, cfg, quick=False):
    """The results page: the settings, then each part's tables and its goal beside the paper's figure
    (the protocol: docs/benchmarks/suite.md, "Filter pruning, channel planting and structure learning")."""
    blocks = ["**Smoke run (`--quick`)**: its accuracies and verdicts say nothing about the methods." if quick else "",
              f"Training images: {results['train_images']}; test images: {results['test_images']}; total time "
              f"{results['seconds'] / 60:.1f} min.", cfg]
    p, q, s = (results.get(part) for part in PARTS)
    if p:
        sel = p["sweep"][p["selected"]]
        blocks += ["## 1. Filter pruning by loss increase (HFP reading) on a small ResNet",
                   [{"model": name, **{k: p[key][k] for k in ("params", "macs", "test_acc")}} for name, key in (
                       ("plain-trained (dense)", "dense"), ("HGSR-trained, unpruned (reference)", "hgsr"))], p["sweep"],
                   f"Goal (>= {100 * cfg['target_removed_fraction']:.0f}% of the parameters removed at <= "
                   f"{cfg['target_drop_points']} point drop; HFP, arXiv 2011.02389, removed > 50% of a CIFAR-10 "
                   f"ResNet's at -0.3%): {verdict(p['target_met'])} at tolerance {sel['tolerance']:g}, "
                   f"{sel['params_removed_%']:.1f}% removed, {-sel['drop_points']:+.2f} points."]
    if q:
        kd, n = cfg["plant_kd_epochs"], q["planted_params"]
        rows = [("teacher", q["teacher_params"], q["teacher_test_acc"]),
                ("student before planting", q["student_params"], q["student_test_acc"]),
                (f"planted student {q['planted_widths']}", n, q["planted_test_acc"]),
                ("same architecture from scratch", n, q["scratch_test_acc"])]
        if "planted_kd_test_acc" in q:
            rows += [(f"planted student, then all parameters distilled {kd} epochs (final)", n,
                      q["planted_kd_test_acc"]), (f"scratch, then distilled the same {kd} epochs", n,
                                                  q["scratch_kd_test_acc"])]
        blocks += ["## 2. Channel planting with distillation (PLANT)",
                   [{"model": m, "params": k, "% of teacher": f"{pct(k, q['teacher_params']):.1f}",
                     "test accuracy": a} for m, k, a in rows],
                   f"Planting stopped by: {q['stopped_by']} ({q['plant_s']:.0f} s).", q["steps"],
                   f"Goal (within {cfg['target_gap_points']} point of the teacher with <= "
                   f"{100 * cfg['param_budget_fraction']:.0f}% of its parameters; PLANT, arXiv 2011.02390, comparable "
                   f"accuracy at 7% on STL-10): {verdict(q['target_met'])}, gap {q['gap_points']:+.2f} points at "
                   f"{q['planted_params_%_of_teacher']:.1f}% of the parameters."]
    if s:
        st = s["structure"]
        layers = [{"layer": f"layer{d}", "width": w,
                   "reads": ", ".join("input" if j == 0 else f"layer{j}" for j in src),
                   "connected units per source": ", ".join(f"{k}: {v}" for k, v in units.items()), "entropy": h}
                  for d, (w, src, units, h) in enumerate(zip(st["widths"], st["connections"], s["connected_units"],
                                                             st["entropy"]), 1)]
        if st["rejected_entropy"] is not None:
            layers.append({"layer": f"(rejected layer{st['depth'] + 1})", "entropy": st["rejected_entropy"]})
        names = {"learned": (f"`build_model(structure, 10)` (learned, depth {st['depth']})", s["learned_params"]),
                 **{k: (f"MLP 784-{'-'.join(map(str, v['widths']))}-10 (closest parameter count)", v["params"])
                    for k, v in s["baselines"].items()}}
        blocks += ["## 3. Structure learning by efficient coding (LSDNN, the project's interpretation)",
                   f"LSDNN: arXiv 2105.13905. `learn_structure` took {s['learn_s']:.0f} s; learned depth "
                   f"{st['depth']}.", layers,
                   [{"model": label, "params": k,
                     "test accuracy per seed": ", ".join(f"{r[key]:.4f}" for r in s["runs"]),
                     "mean": s["test_acc_mean"][key]} for key, (label, k) in names.items()]]
    return "\n".join(render("Filter pruning, channel planting and structure learning on Fashion-MNIST", *blocks))


def subsets(cfg):
    """Fashion-MNIST with ``train_samples`` / ``test_samples`` drawn at random (sorted) when set."""
    rng, data = np.random.default_rng(cfg["seed"]), list(load("fashion"))
    for i, key in ((0, "train_samples"), (2, "test_samples")):
        if cfg[key] is not None:
            idx = np.sort(rng.choice(len(data[i]), cfg[key], replace=False))
            data[i], data[i + 1] = data[i][idx], data[i + 1][idx]
    return (data[0], data[1]), (data[2], data[3])


PARTS = {"pruning": part_pruning, "planting": part_planting, "structure": part_structure}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred images, 1 epoch (smoke run)")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="named overrides of the full settings")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS),
                        help="run only these parts (the results file is named after them)")
    args = parser.parse_args(argv)
    cfg = {**FULL, **PROFILES.get(args.profile, {}), **(QUICK if args.quick else {})}
    start = time.perf_counter()
    data = subsets(cfg)
    results = {"settings": cfg, "train_images": len(data[0][0]), "test_images": len(data[1][0])}
    for part in args.parts:
        results[part] = PARTS[part](data, cfg)
    results["seconds"] = time.perf_counter() - start
    name = "pruning_planting_fashion" + ("" if args.parts == list(PARTS) else "_" + "_".join(args.parts))
    publish(name + (f"_{args.profile}" if args.profile else ""), results,
            [markdown(results, cfg, args.quick)], args.quick)
    return results


if __name__ == "__main__":
    main()
