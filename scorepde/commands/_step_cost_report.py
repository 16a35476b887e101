"""``scorepde-step-cost``'s report: table.md and step_cost.png from its metrics.json alone."""

from __future__ import annotations

from scorepde.reporting import markdown_table

COST_HEADERS = [
    "configuration",
    "residual samples / step",
    "step (s, median)",
    "× DSM",
    "per residual sample (s)",
    "per sample × paper",
    "peak memory (MB)",
    "memory × DSM",
]
EFFECT_HEADERS = [
    "training",
    "E‖ε‖² (mean)",
    "‖ε‖² (median)",
    "E‖ε‖², last evaluations",
    "× recipe (last evaluations)",
    "held-out DSM loss",
    "train time (s)",
    "time-to-effect (s)",
    "steps-to-effect",
    "E‖ε‖² at equal time",
]


def _fmt(value, spec, missing="–"):
    return missing if value is None else format(value, spec)


def _cost_cells(name, r):
    return [
        name,
        f"{r['residual_samples']:g}",
        f"{r['time']['median']:.3f}",
        f"{r['ratio_to_dsm']:.2f}",
        _fmt(r["per_sample_seconds"], ".4f"),
        _fmt(r["per_sample_ratio_to_paper"], ".2f"),
        f"{r['peak_bytes'] / 1e6:.1f}",
        f"{r['memory_ratio_to_dsm']:.2f}",
    ]


def _effect_cells(name, e, paper_tail):
    return [
        name,
        f"{e['residual_sq_mean']:.4g}",
        f"{e['residual_sq_median']:.4g}",
        f"{e['residual_sq_tail_mean']:.4g}",
        f"{e['residual_sq_tail_mean'] / paper_tail:.2f}",
        f"{e['heldout_dsm']:.4f}",
        f"{e['train_seconds']:.1f}",
        _fmt(e["time_to_effect_seconds"], ".1f", "never"),
        _fmt(e["steps_to_effect"], "", "never"),
        _fmt(e["residual_sq_at_equal_time"], ".4g"),
    ]


def cost_lines(rows, setup, info):
    """The step-cost table: time, ratios and peak memory of every configuration."""
    head = [
        f"Device: {info['device_name']} ({info['device']}, {info['torch_threads']} thread(s)); "
        f"load average {', '.join(f'{v:.2f}' for v in info['load_average'])} at the start; "
        f"data {setup['data']} {setup['image_shape']}, batch {setup['batch']}, U-Net "
        f"{setup['parameters']:,} parameters; medians of {setup['repeats']} interleaved steps.",
        "",
    ]
    table = markdown_table(COST_HEADERS, (_cost_cells(name, r) for name, r in rows.items()), "lrrrrrrr")
    return head + [
        table,
        "",
        "Per residual sample = (step − DSM step) / residual samples per step. Memory: "
        + setup["memory_measure"]
        + ".",
        "",
    ]


def compile_lines(rows, setup, compiled):
    """One line per torch.compile'd configuration: its compile time, saving and break-even."""
    lines = []
    for name, r in rows.items():
        if "compile_seconds" in r:
            be = "never" if r["break_even_steps"] is None else f"{r['break_even_steps']:.0f} steps"
            lines.append(
                f"torch.compile, {name}: first two calls {', '.join(f'{v:.1f}' for v in r['first_calls_seconds'])} s, "
                f"compile ≈ {r['compile_seconds']:.1f} s beyond two steady steps; saves "
                f"{r['saved_per_step_seconds']:.3f} s per step against {compiled[name]}; pays off after {be}."
            )
    for name, c in (setup.get("compile") or {}).items():
        lines.append(f"torch.compile, {name}: failed after {c['seconds_before_error']:.1f} s: {c['error']}")
    return lines + [""] if lines else []


def condition_lines(conditions):
    """Step time × DSM of the goal configurations as found and beside a busy job."""
    if "with_neighbour" not in conditions:
        return []
    names = list(conditions["with_neighbour"]["ratio_to_dsm"])
    return (
        ["Step time × DSM under both conditions (" + conditions["with_neighbour"]["note"] + "):", ""]
        + [
            markdown_table(
                ["condition"] + names,
                ([cond] + [f"{c['ratio_to_dsm'][n]:.2f}" for n in names] for cond, c in conditions.items()),
                "l" + "r" * len(names),
            )
        ]
        + [""]
    )


def effect_lines(effect, equal_time, level, tail_evaluations):
    """The toy effect: held-out E‖ε‖², time- and steps-to-effect of every configuration."""
    paper_tail = effect["paper"]["residual_sq_tail_mean"]
    head = [
        f"Effect on a 2-D Gaussian mixture (MLP, VP SDE, same β, exact residual on held-out x_t); "
        f"time-to-effect = training seconds until held-out E‖ε‖² < {level:g}; "
        f"'at equal time' = at {equal_time:.1f} s of training, the shortest regularized run; "
        f"'last evaluations' = the mean over the last {tail_evaluations} evaluations (the goals use it):",
        "",
    ]
    return head + [
        markdown_table(
            EFFECT_HEADERS, (_effect_cells(name, e, paper_tail) for name, e in effect.items()), "lrrrrrrrrr"
        )
    ]


def table_md(metrics, tail, compiled) -> str:
    """table.md of a step-cost run from its metrics.json; ``tail``: evaluations in the effect's
    tail mean; ``compiled``: each torch.compile'd configuration → the one it is compared with."""
    rows, setup = metrics["table"], metrics["setup"]
    lines = (
        cost_lines(rows, setup, metrics["machine"])
        + compile_lines(rows, setup, compiled)
        + condition_lines(metrics["conditions"])
        + effect_lines(metrics["effect"], metrics["equal_time_seconds"], metrics["effect_level"], tail)
    )
    return "\n".join(lines) + "\n"


def plot(metrics, path):
    """step_cost.png: step time and peak memory × DSM, and the toy's residual against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, effect, level = metrics["table"], metrics["effect"], metrics["effect_level"]
    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, key, color, what in (
        (axes[0], "ratio_to_dsm", "tab:blue", "time per optimizer step"),
        (axes[1], "memory_ratio_to_dsm", "tab:orange", "peak memory per step"),
    ):
        ax.bar(names, [rows[n][key] for n in names], color=color)
        ax.set_ylabel(
            "step time / DSM step time" if key == "ratio_to_dsm" else "peak memory / DSM peak memory"
        )
        ax.set_yscale("log")
        ax.set_title(what)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes[0].axhline(1.3, color="k", ls="--", lw=1, label="goal: 1.3× DSM")
    axes[0].legend()
    for name, e in effect.items():
        axes[2].plot(
            [c["train_seconds"] for c in e["curve"]], [c["residual_sq_mean"] for c in e["curve"]], label=name
        )
    axes[2].axhline(level, color="k", ls="--", lw=1, label="time-to-effect level")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("training wall time (s)")
    axes[2].set_ylabel("held-out E‖ε‖² (exact)")
    axes[2].set_title("toy: residual against wall time")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
