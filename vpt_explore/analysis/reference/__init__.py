"""Reference results a run is compared with: the paper's numbers (``paper``), the offline suite's own
3-seed reference (``offline``), "your run" next to both (``compare``, ``format_compare``,
``plot_compare``), and the paper's findings checked on our numbers (``findings``).

    import vpt_explore as vx
    vx.reference.paper("vpt-deep", "structured")   # the paper's per-task numbers, each with its table
    vx.reference.offline()["cells"]                 # this package's reference runs
    vx.reference.plot_compare(rows)                 # your run vs the reference, a Figure
    vx.reference.scale.takeaways()                  # the scale lesson (notebook 11), from the numbers
"""
from .compare import PAPER_ANALOG, compare, format_compare, plot_compare
from .findings import (format_directions, format_reference_markdown, format_targets, gap_sentence, readme_block,
                       targets)
from .offline_runs import METHODS, TASK_ORDER, cell, complete_tasks, group_means, offline, tuned_lr, verdict
from . import scale
from .paper_numbers import (PaperNumber, check_group_means, paper, paper_group_means, paper_headline,
                            paper_headlines, paper_methods, paper_value)

__all__ = ["PAPER_ANALOG", "compare", "format_compare", "plot_compare", "format_directions", "gap_sentence",
           "format_targets", "targets", "format_reference_markdown", "readme_block", "METHODS", "TASK_ORDER", "cell", "complete_tasks",
           "group_means", "offline", "tuned_lr", "verdict", "PaperNumber", "check_group_means", "paper", "paper_group_means",
           "paper_headline", "paper_headlines", "paper_methods", "paper_value", "scale"]
