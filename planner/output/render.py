"""Rich rendering of a :class:`~planner.output.plan.Plan` for people. All sizes in GiB (2**30 bytes)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from planner.output.plan import Plan, Recommendation
from planner.inputs.units import gib


def _g(nbytes: int) -> str:
    return f"{gib(nbytes):.2f}"


def _rank(rec: Recommendation) -> str:
    return "full fine-tune" if rec.settings.full_finetune else f"r={rec.settings.rank}"


def _settings_line(rec: Recommendation) -> tuple[str, ...]:
    s = rec.settings
    return (
        "full" if s.full_finetune else str(s.rank), str(s.seq_len), str(s.batch), str(s.grad_accum),
        "on" if s.gradient_checkpointing else "off", s.optim.replace("paged_adamw_", "paged ").replace("adamw_", "adamw "),
        _g(rec.peak_bytes), _g(rec.headroom_bytes),
    )


def render(plan: Plan, console: Console | None = None) -> None:
    console = console or Console()
    m, g, s = plan.model, plan.gpu, plan.settings
    gpus = f"{g.count} x " if g.count > 1 else ""
    console.print(
        f"[bold]{m.name}[/] ({m.model_type}, {m.params / 1e9:.2f} B params, {m.layers} layers, vocab {m.vocab}) "
        f"on [bold]{gpus}{g.label}[/] ({_g(g.total_bytes)} GiB, {_g(g.usable_bytes)} usable"
        + (f", {_g(g.budget_bytes)} after --margin)" if g.budget_bytes != g.usable_bytes else ")")
    )
    quant = "16-bit" if s.quant == "none" or s.full_finetune else s.quant.upper() + (" + double quant" if s.double_quant else "")
    what = "full fine-tune of every weight" if s.full_finetune else f"LoRA r={s.rank} on {','.join(s.targets)}"
    if plan.method == "traced":
        console.print("priced by trace: the real step run on fake CUDA tensors, its requests replayed through "
                      "a simulator of torch's caching allocator")
    console.print(
        f"{what} | {quant} | "
        f"seq_len {s.seq_len} | micro-batch {s.batch} x grad-accum {s.grad_accum} | {s.optim} | "
        f"checkpointing {'on' if s.gradient_checkpointing else 'off'} | {s.attn} | {s.compute_dtype}"
    )

    table = Table(title="Memory at the peak (GiB)", title_justify="left")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    for name, size in plan.breakdown.items():
        table.add_row(name, _g(size))
    table.add_row("[bold]peak on the device (nvidia-smi)[/]", f"[bold]{_g(plan.peak_bytes)}[/]")
    table.add_row("  torch max_memory_allocated", _g(plan.allocated_peak_bytes))
    table.add_row("  torch max_memory_reserved", _g(plan.reserved_peak_bytes))
    console.print(table)
    console.print(f"peak phase: {plan.peak_phase}; trainable parameters: {plan.trainable_params:,}")
    if plan.margin_bytes:
        console.print(f"safety margin: {_g(plan.margin_bytes)} GiB ({g.margin_rule})")
    else:
        console.print(f"safety margin: {g.margin_rule}")

    if plan.fits:
        pct = 100 * plan.headroom_bytes / g.usable_bytes
        console.print(f"[bold green]FITS[/] with {_g(plan.headroom_bytes)} GiB headroom beyond the margin ({pct:.1f}% of usable)")
    else:
        console.print(f"[bold red]DOES NOT FIT[/]: {_g(-plan.headroom_bytes)} GiB over, counting the safety margin")

    if plan.recommendations:
        # no vertical rules and fixed widths: every column stays readable on a 60-column terminal
        rec_table = Table(title="Settings that fit, best first (peak and spare in GiB)", title_justify="left",
                          box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
        for column, width in (("r", 4), ("seq_len", 7), ("batch", 5), ("accum", 5), ("ckpt", 4), ("optimizer", 11),
                              ("peak", 6), ("spare", 6)):
            rec_table.add_column(column, justify="right", no_wrap=True, min_width=width)
        for rec in plan.recommendations:
            rec_table.add_row(*_settings_line(rec))
        console.print(rec_table)
        if plan.longest_seq_len:
            r = plan.longest_seq_len
            console.print(f"longest seq_len that fits: {r.settings.seq_len} ({_rank(r)}, micro-batch {r.settings.batch}, {_g(r.peak_bytes)} GiB)")
        if plan.largest_batch:
            r = plan.largest_batch
            console.print(f"largest micro-batch that fits: {r.settings.batch} (seq_len {r.settings.seq_len}, {_rank(r)}, {_g(r.peak_bytes)} GiB)")
    if plan.parallel:
        p = plan.parallel
        if p.cpu_offload:
            console.print(f"host memory for the offloaded state: {_g(p.host_bytes)} GiB (all ranks together, plus the "
                          "quantized model rank 0 stages while wrapping)")
        console.print(f"launch: {p.launch}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}")
    if plan.alternatives:
        console.print("[bold]What would work instead:[/]")
        for alt in plan.alternatives:
            console.print(f"  - {alt.summary}")
    p = plan.profile
    console.print(f"[dim]overheads: profile {p.name} ({p.status}{', ' + p.gpu if p.gpu != '*' else ''}{', ' + p.date if p.date else ''})[/]")
