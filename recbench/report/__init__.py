"""`python -m recbench.report [FOLDER ...]`: the leaderboard of every results.json below the folders.

    python -m recbench.report experiments/                     # leaderboard.md + leaderboard.html + plots
    python -m recbench.report experiments/a2gen_tmall --format csv,json --out /tmp/board

What it does, in order:
  1. finds every `results.json` below the folders, and every run folder (a `.hydra/` folder of a
     `python -m recbench` run) without one: still running, or crashed before writing its record;
  2. puts finished records into tables: one per dataset, data source, monitored metric and shared
     settings. The rows of a table differ only in the model, the model's own settings (MODEL_OWNED:
     model.*, the task and optimizer its config switches to, its text stage and text inputs) and the
     seed; any other difference (data.*, e.g. replica sizes, the dataset fingerprint, trainer.*, e.g.
     epochs, loader.*, streaming.*) makes another table, headed by the settings that set it apart
     (`data=tmall, data.replica.n_users=600, trainer.max_epochs=1`). The "task" of a table is the metric
     the runs were selected on (`task.monitor`), not the task config: A2Gen trains with
     `task=action_generation`, MMoE with `task=actions`, and both are scored on the same test metrics;
  3. within a table one row per (model, config key); the config key hashes the resolved config minus
     the seed and the settings that cannot change a result (paths, logger, progress bar, tags, ...; see
     NON_SEMANTIC) plus the dataset fingerprint, so records that differ in anything else are never
     averaged together: they become separate rows with a short suffix naming what differs. Two
     records of the same row and seed: the newer counts, the older is listed as superseded;
  4. per row and metric: mean +- 95% confidence interval over seeds (Student t), number of seeds; the
     best mean per column is marked where two or more models report the metric; each row is compared
     with its table's reference row (the best baseline by the validation value of the monitored metric)
     by a paired t-test on the seeds both have, never with a row of another table.
     The metrics are the test ones (metrics.test: fixed test days) and, where a record has them,
     the progressive ones (metrics.progressive: progressive validation over the training stream),
     side by side with the same statistics; a record's `progressive_curve` (per time slice) becomes
     a per-day table and a plot;
  5. writes leaderboard.md, a self-contained leaderboard.html (plots inlined; each run linked, folder and
     record, relative to the page) and the plots as PNG files (leaderboard_files/), or `--format csv|json`
     for machines. Every write is atomic.

`--tags a,b` keeps the runs whose config.tags (conf/config.yaml, e.g. `python -m recbench ... 'tags=[a]'`)
holds any of them.

Which models are baselines: the `benchmark:` block of an experiment config (conf/experiment/*.yaml,
recorded in each run's config) names `proposed`, `baselines` and `ablations`; `--baselines a,b`
overrides it. With no roles at all, every row is a candidate and the reference is the best row.
"""

from __future__ import annotations

from recbench.records import write_atomic
from recbench.report.cli import FORMATS, main, make_report, parse_args, write_report
from recbench.report.collect import (MODEL_OWNED, NON_SEMANTIC, SUFFIX_ORDER, Run, config_key,
                                     distinguishing_suffixes, find_runs, fixed_settings, run_tags, semantic_config,
                                     shared_config, table_key, with_tags)
from recbench.report.plots import ROLE_COLOURS, plot_bars, plot_curves, plot_progressive
from recbench.report.render import (CSS, CSV_COLUMNS, DEFINITIONS, OUTPUT_STEM, PLOTS_DIR, PROGRESSIVE_NOTE,
                                    SIGNIFICANCE, Report, column_name, fmt, fmt_p, fmt_paired, fmt_stat, render_csv,
                                    render_html, render_json, render_markdown, short_metric)
from recbench.report.statistics import (CONFIDENCE, STUDENT_T, Paired, Stat, betainc, paired_t_test, t_cdf,
                                        t_ppf, t_two_sided_p)
from recbench.report.tables import (LEADERBOARD_SPLITS, LOWER_IS_BETTER, METRIC_SPLITS, Row, Table, build_tables,
                                    lower_is_better)

__all__ = ["CONFIDENCE", "CSS", "CSV_COLUMNS", "DEFINITIONS", "FORMATS", "LEADERBOARD_SPLITS", "LOWER_IS_BETTER",
           "METRIC_SPLITS", "MODEL_OWNED", "NON_SEMANTIC", "OUTPUT_STEM", "PLOTS_DIR", "PROGRESSIVE_NOTE",
           "ROLE_COLOURS", "SIGNIFICANCE", "STUDENT_T", "SUFFIX_ORDER", "Paired", "Report", "Row", "Run", "Stat",
           "Table", "betainc", "build_tables", "column_name", "config_key", "distinguishing_suffixes", "find_runs",
           "fixed_settings", "fmt", "fmt_p", "fmt_paired", "fmt_stat", "lower_is_better", "main", "make_report",
           "paired_t_test", "parse_args", "plot_bars", "plot_curves", "plot_progressive", "render_csv", "render_html",
           "render_json", "render_markdown", "run_tags", "semantic_config", "shared_config", "short_metric", "t_cdf",
           "t_ppf", "t_two_sided_p", "table_key", "with_tags", "write_atomic", "write_report"]
